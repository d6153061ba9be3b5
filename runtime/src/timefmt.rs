//! Time stamps as Docker prints them: RFC 3339 in JSON, "5 seconds ago" in tables.

use std::time::{Duration, SystemTime};

/// RFC 3339 with nanoseconds, UTC (`2026-11-24T23:15:00.123456789Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Parses what [`rfc3339`] wrote.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// Docker's `units.HumanDuration`: "Less than a second", "5 seconds", "About a minute", ...
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let minutes = secs / 60;
    let hours = minutes / 60;
    match () {
        _ if secs < 1 => "Less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// How long ago `t` was, in Docker's words.
pub fn ago(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    human_duration(d)
}

/// Docker's `units.HumanSize` (decimal): "4.19MB", "1.2GB".
pub fn human_size(bytes: u64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB"])
}

/// Docker's `units.BytesSize` (binary), used for memory: "64MiB", "1.5GiB".
pub fn bytes_size(bytes: u64) -> String {
    scaled(bytes, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"])
}

fn scaled(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= base && i < units.len() - 1 {
        v /= base;
        i += 1;
    }
    let s = format!("{v:.3}");
    let s = trim_to_sig(&s, 4);
    format!("{s}{}", units[i])
}

/// Keeps `sig` significant digits, dropping trailing zeros (Docker prints "%.4g").
fn trim_to_sig(s: &str, sig: usize) -> String {
    let v: f64 = s.parse().unwrap_or(0.0);
    let int_digits = (v.trunc() as u64).to_string().len();
    let decimals = sig.saturating_sub(int_digits);
    let out = format!("{v:.decimals$}");
    if out.contains('.') {
        out.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(4_190_000), "4.19MB");
        assert_eq!(bytes_size(64 << 20), "64MiB");
        assert_eq!(bytes_size(1536 * 1024), "1.5MiB");
    }

    #[test]
    fn rfc3339_round_trips() {
        let now = SystemTime::now();
        assert_eq!(parse_rfc3339(&rfc3339(now)), Some(now));
    }
}
