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
