//! The client side of CRI's streaming calls as the kubelet's apiserver proxy speaks it:
//! WebSocket to the URL CRI's Exec answered with, in Kubernetes' channel protocol
//! (`v4.channel.k8s.io`): each binary message's first byte is its channel (0 stdin,
//! 1 stdout, 2 stderr, 3 the final status as a JSON `metav1.Status`).

use std::fs::File;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

use super::BOUND;

/// What a streamed exec gave: its two streams and its exit code.
#[derive(Debug)]
pub struct Streamed {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Runs the exec behind `url` (containerd's streaming server, which listens in the network
/// namespace `netns`), sends `input` on stdin, and reads until the server closes.
pub fn exec(netns: &str, url: &str, input: Option<&[u8]>) -> Streamed {
    let netns = format!("/run/netns/{netns}");
    let url = url.replacen("http://", "ws://", 1);
    let input = input.map(<[u8]>::to_vec);
    // setns of a network namespace is the calling thread's alone: a thread of its own.
    std::thread::spawn(move || {
        enter_network_namespace(&netns);
        converse(&url, input)
    })
    .join()
    .expect("the streaming client")
}

fn enter_network_namespace(path: &str) {
    let ns = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on an open namespace file; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn converse(url: &str, input: Option<Vec<u8>>) -> Streamed {
    let mut request = url.into_client_request().expect("a WebSocket URL");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let uri = request.uri().clone();
    let address = format!(
        "{}:{}",
        uri.host().expect("a host"),
        uri.port_u16().expect("a port")
    );
    let tcp = TcpStream::connect(&address).unwrap_or_else(|e| panic!("{address}: {e}"));
    tcp.set_read_timeout(Some(BOUND)).unwrap();
    let (mut socket, response) =
        tungstenite::client(request, tcp).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("v4.channel.k8s.io"),
        "the server speaks the protocol asked for"
    );
    if let Some(input) = input {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&input);
        socket.send(Message::Binary(frame.into())).unwrap();
    }
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        match socket.read() {
            Ok(Message::Binary(data)) if !data.is_empty() => match data[0] {
                1 => stdout.extend_from_slice(&data[1..]),
                2 => stderr.extend_from_slice(&data[1..]),
                3 => status.extend_from_slice(&data[1..]),
                _ => {}
            },
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading {url}: {e}"),
        }
    }
    Streamed {
        stdout: String::from_utf8_lossy(&stdout).into(),
        stderr: String::from_utf8_lossy(&stderr).into(),
        code: exit_code(&status),
    }
}

/// The exit code in the final status: `Success` is 0; a failure names the code as the
/// cause of reason `ExitCode`.
fn exit_code(status: &[u8]) -> i32 {
    let status: serde_json::Value = serde_json::from_slice(status)
        .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(status)));
    if status["status"] == "Success" {
        return 0;
    }
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no exit code in {status}"))
}
