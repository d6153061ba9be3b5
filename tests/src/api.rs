//! A `capsa serve` for one test: started in the test's network namespace on its own
//! state root and socket, with the test's cgroup parent as the default one, and stopped
//! (SIGTERM) when dropped. Clients reach it through [`ApiServer::docker`] (the real
//! docker CLI), [`ApiServer::request`] (raw HTTP/1.1 for status codes and bad input),
//! or any program given [`ApiServer::docker_host`].

use crate::{run_bounded, text, TestEnv};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `capsa serve`.
pub struct ApiServer {
    child: Child,
    socket: PathBuf,
    /// The docker CLI's config folder (no user's contexts or credentials leak in).
    config: tempfile::TempDir,
    log: PathBuf,
}

impl TestEnv {
    /// Starts `capsa serve` for this environment and waits until `/_ping` answers.
    pub fn serve(&self) -> ApiServer {
        self.serve_with(&[])
    }

    /// [`serve`](Self::serve) with more flags for `capsa serve`.
    pub fn serve_with(&self, extra: &[&str]) -> ApiServer {
        let socket = self.root().join("api.sock");
        let log = self.root().join("serve.log");
        let host = format!("unix://{}", socket.display());
        let mut args = vec![
            "serve",
            "-H",
            &host,
            "--cgroup-parent",
            self.cgroup_parent(),
        ];
        args.extend_from_slice(extra);
        let mut cmd = self.command(&args);
        // One file for both, as a service manager gives them: what the server relays for
        // its clients must not depend on its own streams.
        let file = std::fs::File::create(&log).expect("serve log");
        let out = file.try_clone().expect("serve log");
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(file));
        let child = cmd.spawn().expect("spawn capsa serve");
        let server = ApiServer {
            child,
            socket,
            config: tempfile::tempdir().expect("docker config dir"),
            log,
        };
        server.wait_ready();
        server
    }
}

impl ApiServer {
    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok((200, _)) = self.try_request("GET", "/_ping", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("capsa serve did not answer: {}", self.log());
    }

    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix:///...`, for DOCKER_HOST.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The real docker CLI pointed at this server.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.docker_host())
            .env("DOCKER_CONFIG", self.config.path())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `docker ARGS` to completion (60 s at most).
    pub fn docker(&self, args: &[&str]) -> Output {
        run_bounded(self.docker_command(args), Duration::from_secs(120))
    }

    /// `docker ARGS`, panicking with its stderr unless it succeeds; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\nserver log:\n{}",
            text(&out.stderr),
            self.log()
        );
        text(&out.stdout)
    }

    /// One HTTP/1.1 request; returns the status and the (de-chunked) body.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A request whose body is JSON; returns the status and the parsed body (Null when
    /// the body is empty or not JSON).
    pub fn request_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let (status, out) = self.request(method, path, bytes.as_deref());
        (
            status,
            serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null),
        )
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.unwrap_or(b"");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        // The body goes from another thread while this one reads: a server may answer
        // (413) and close before taking a large body whole, as HTTP allows.
        let mut writer = stream.try_clone()?;
        let body = body.to_vec();
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(&body);
        });
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        let _ = sender.join();
        if raw.is_empty() {
            read?;
        }
        parse_response(&raw)
    }
}

/// Splits a whole HTTP/1.1 response into its status and body (chunked bodies joined).
fn parse_response(raw: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            break;
        }
        let start = nl + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    Ok((status, out))
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's PID, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
