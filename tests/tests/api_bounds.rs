//! What one API client can make `capsa serve` spend: memory for a tiny archive or one log
//! line, CPU for a filter, the threads every other client needs, and who may read a
//! build's arguments. Each test measures what an attacker would (the server's peak
//! memory, whether other requests are still answered, the processes' command lines).

use capsa_tests::{text, TestEnv};

/// `%XX` for everything but unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `message` of an error body.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| text(body))
}

/// A `reference` pattern longer than any name is refused, naming the filter; a pattern of
/// many stars (exponential for a backtracking matcher) is answered.
#[test]
fn reference_filters_are_bounded_and_matched_without_backtracking() {
    let env = TestEnv::new();
    let api = env.serve();
    let long = format!("{{\"reference\":[\"{}\"]}}", "a".repeat(4000));
    let (status, body) = api.request(
        "GET",
        &format!("/v1.45/images/json?filters={}", urlencode(&long)),
        None,
    );
    assert_eq!(status, 400, "{}", text(&body));
    assert!(message(&body).contains("reference"), "{}", text(&body));

    let tag = format!("busybox:{}", "a".repeat(60));
    api.docker_ok(&["tag", "busybox", &tag]);
    let stars = format!("{{\"reference\":[\"busybox:{}b\"]}}", "*a".repeat(20));
    let (status, body) = api.request(
        "GET",
        &format!("/v1.45/images/json?filters={}", urlencode(&stars)),
        None,
    );
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(text(&body).trim(), "[]");
    let all = format!("{{\"reference\":[\"busybox:{}\"]}}", "*a".repeat(20));
    let (status, body) = api.request(
        "GET",
        &format!("/v1.45/images/json?filters={}", urlencode(&all)),
        None,
    );
    assert_eq!(status, 200, "{}", text(&body));
    assert!(text(&body).contains(&tag), "{}", text(&body));
    drop(api);
    env.assert_clean();
}

/// The peak resident memory of process `pid` (VmHWM), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// A GNU sparse tar entry `name` of `real` bytes (a hole, then `data`), and the archive's
/// end: 2 KB of archive.
fn sparse_archive(name: &str, real: u64, data: &[u8]) -> Vec<u8> {
    let octal = |n: u64, width: usize| format!("{n:0w$o}\0", w = width - 1).into_bytes();
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(&octal(0o644, 8));
    h[108..116].copy_from_slice(&octal(0, 8));
    h[116..124].copy_from_slice(&octal(0, 8));
    h[124..136].copy_from_slice(&octal(data.len() as u64, 12));
    h[136..148].copy_from_slice(&octal(0, 12));
    h[156] = b'S';
    h[257..265].copy_from_slice(b"ustar  \0");
    // One extent: the data at the end of the file.
    h[386..398].copy_from_slice(&octal(real - data.len() as u64, 12));
    h[398..410].copy_from_slice(&octal(data.len() as u64, 12));
    h[483..495].copy_from_slice(&octal(real, 12));
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(1024, 0);
    out.extend_from_slice(&[0; 1024]);
    out
}

/// `docker load` of 2 KB whose manifest.json is a 1 GiB sparse file: refused by name, and
/// the server's peak memory stays far below the file's size (it read it whole before).
#[test]
fn a_sparse_entry_in_a_loaded_archive_is_refused_without_reading_it() {
    let env = TestEnv::new();
    let api = env.serve();
    let archive = sparse_archive("manifest.json", 1 << 30, b"[]");
    let (status, body) = api.request("POST", "/v1.45/images/load", Some(&archive));
    assert_eq!(status, 200, "{}", text(&body));
    let peak = peak_memory(api.pid());
    assert!(peak < 256 << 20, "the server's peak memory: {peak} bytes");
    let error = text(&body);
    assert!(
        error.contains("entry manifest.json: a sparse file"),
        "{error}"
    );
    drop(api);
    env.assert_clean();
}

/// The parent's pid of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The children of process `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

/// A tar of one file.
fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

/// A build's arguments (a token, say) and labels are not on the command line of the build
/// process the server starts, which any local user reads; they still reach the build.
/// The request's body is held back until the build process has been looked at: it waits
/// for its context then.
#[test]
fn build_arguments_are_not_on_a_command_line_other_users_read() {
    use std::io::{Read, Write};
    let env = TestEnv::new();
    let api = env.serve();
    let context = tar_of(
        "Dockerfile",
        b"FROM busybox\nARG TOKEN\nRUN echo token=$TOKEN\n",
    );
    let query = format!(
        "buildargs={}&labels={}&t=argbuild:1&networkmode=none",
        urlencode(r#"{"TOKEN":"s3cr3t-token"}"#),
        urlencode(r#"{"owner":"s3cr3t-label"}"#)
    );
    let mut stream = std::os::unix::net::UnixStream::connect(api.socket()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let head = format!(
        "POST /v1.45/build?{query} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        context.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut builds = Vec::new();
    capsa_tests::eventually(
        "the build process",
        std::time::Duration::from_secs(60),
        || {
            builds = children_of(api.pid())
                .into_iter()
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"build"))
                })
                .collect();
            !builds.is_empty()
        },
    );
    for pid in &builds {
        let out = capsa_tests::as_nobody("cat", &[&format!("/proc/{pid}/cmdline")]);
        let line = text(&out.stdout).replace('\0', " ");
        assert!(line.contains(" build "), "another user reads: {line}");
        assert!(!line.contains("s3cr3t"), "another user reads: {line}");
    }
    stream.write_all(&context).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = text(&answer);
    assert!(answer.contains("token=s3cr3t-token"), "{answer}");
    assert!(
        answer.contains("Successfully tagged argbuild:1"),
        "{answer}"
    );
    let (status, image) = api.request_json("GET", "/v1.45/images/argbuild:1/json", None);
    assert_eq!(status, 200);
    assert_eq!(
        image["Config"]["Labels"]["owner"], "s3cr3t-label",
        "{image}"
    );
    drop(api);
    env.assert_clean();
}

/// Reads a response's head from `stream`: its status, its headers, and the bytes read
/// past them.
fn read_head(stream: &mut std::os::unix::net::UnixStream) -> (u16, String, Vec<u8>) {
    use std::io::Read;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("a response head");
        assert!(n > 0, "no response head: {}", text(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = text(&raw[..end]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[end + 4..].to_vec())
}

/// However many streams clients open (each held a blocking thread for its life, and 256
/// of them hung every other request), `docker ps` is answered: streams past the cap are
/// refused with a 503 that names it.
#[test]
fn open_streams_never_starve_short_requests() {
    use std::io::{Read, Write};
    let env = TestEnv::new();
    let api = env.serve();
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..300 {
        let mut stream = std::os::unix::net::UnixStream::connect(api.socket()).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        stream
            .write_all(b"GET /v1.45/events HTTP/1.1\r\nHost: docker\r\n\r\n")
            .unwrap();
        let (status, head, mut body) = read_head(&mut stream);
        if status == 200 {
            open.push(stream);
            continue;
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a content length");
        while body.len() < length {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0);
            body.extend_from_slice(&buf[..n]);
        }
        refused.push((status, message(&body)));
    }
    // Every stream that was let in is open; a short request is still answered.
    let (status, body) = api.request("GET", "/v1.45/containers/json?all=1", None);
    assert_eq!(status, 200, "{}", text(&body));
    let (status, message) = refused.first().expect("streams past the cap refused");
    assert_eq!(*status, 503, "{message}");
    assert!(
        message.contains(&format!("at most {} at once", open.len())),
        "{} open: {message}",
        open.len()
    );
    assert_eq!(open.len() + refused.len(), 300);
    drop(open);
    drop(api);
    env.assert_clean();
}

/// Bytes process `pid` has read so far (read(2), pread(2)...: `rchar`).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// One json-file record of `text` on stdout.
fn log_record(text: &str) -> String {
    format!("{{\"log\":\"{text}\\n\",\"stream\":\"stdout\",\"time\":\"2026-01-01T00:00:00.000000000Z\"}}\n")
}

/// The stdout of Docker's multiplexed frames in `raw` (whole frames only).
fn demuxed_stdout(mut raw: &[u8]) -> String {
    let mut out = Vec::new();
    while raw.len() >= 8 {
        let len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
        if raw.len() < 8 + len {
            break;
        }
        if raw[0] == 1 {
            out.extend_from_slice(&raw[8..8 + len]);
        }
        raw = &raw[8 + len..];
    }
    text(&out)
}

/// `logs --tail 1` of a 100 MB log reads its end, not the log (the server held every
/// record: 764 MB for a 216 MB log), and a follower reads what is appended, not the whole
/// log again at every wake-up (one `logs -f` kept a core busy).
#[test]
fn logs_tail_and_follow_cost_what_they_show_not_the_logs_size() {
    use std::io::{Read, Write};
    let env = TestEnv::new();
    let api = env.serve();
    let out = env.run(&[
        "-d",
        "--name",
        "big",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let log = env.root().join("containers").join(&id).join("ctr.log");
    let mut file =
        std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    let mut size = 0;
    let mut n = 0;
    while size < 100 << 20 {
        let rec = log_record(&format!("line {n}"));
        file.write_all(rec.as_bytes()).unwrap();
        size += rec.len();
        n += 1;
    }
    drop(file);

    let (status, body) = api.request("GET", "/v1.45/containers/big/logs?stdout=1&tail=1", None);
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(demuxed_stdout(&body), format!("line {}\n", n - 1));
    let peak = peak_memory(api.pid());
    assert!(peak < 64 << 20, "the server's peak memory: {peak} bytes");

    let mut stream = std::os::unix::net::UnixStream::connect(api.socket()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(
            b"GET /v1.45/containers/big/logs?stdout=1&follow=1&tail=0 HTTP/1.1\r\nHost: docker\r\n\r\n",
        )
        .unwrap();
    let (status, _, mut got) = read_head(&mut stream);
    assert_eq!(status, 200);
    let before = bytes_read(api.pid());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(log_record("appended").as_bytes())
        .unwrap();
    let mut buf = [0u8; 4096];
    while !text(&got).contains("appended") {
        let n = stream.read(&mut buf).expect("the appended record");
        assert!(n > 0, "the stream ended: {}", text(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let read = bytes_read(api.pid()) - before;
    assert!(
        read < 8 << 20,
        "the server read {read} bytes to follow one record of a {size}-byte log"
    );
    drop(stream);
    api.docker_ok(&["rm", "-f", "big"]);
    drop(api);
    env.assert_clean();
}
