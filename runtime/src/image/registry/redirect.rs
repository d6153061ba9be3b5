//! Redirects a registry sends, followed by hand. ureq follows a redirect to plain HTTP on
//! any host, so a registry (or a CDN it sends blobs to) could have a private image's
//! manifests and blobs cross the network in the clear, against what capsa promises: plain
//! HTTP only to loopback or to a host listed as insecure.

use super::RegistrySettings;

/// Hops followed before giving up, as Docker's client.
const MAX_HOPS: usize = 8;

/// Why a body-less request did not end in a response.
pub(super) enum Failed {
    /// ureq's own error (a status of 400 and up, or the transport).
    Ureq(Box<ureq::Error>),
    /// A redirect capsa does not follow (to plain HTTP, a scheme other than HTTP(S), too
    /// many hops, or an unreadable `Location`).
    Refused(String),
}

/// Sends a body-less request (GET, HEAD) to `url` with an agent that follows no redirect,
/// and follows 301, 302, 303, 307 and 308 here: to HTTPS anywhere, to plain HTTP only to a
/// host `settings` allows it for. `build` makes each hop's request and is told whether the
/// hop is on `url`'s own origin (credentials go only there).
pub(super) fn call(
    agent: &ureq::Agent,
    settings: &RegistrySettings,
    method: &str,
    url: &str,
    build: impl Fn(ureq::Request, bool) -> ureq::Request,
) -> Result<ureq::Response, Failed> {
    let first = url::Url::parse(url).map_err(|e| Failed::Refused(format!("{url}: {e}")))?;
    let mut at = first.clone();
    for _ in 0..=MAX_HOPS {
        let same_origin = at.origin() == first.origin();
        let resp = build(agent.request(method, at.as_str()), same_origin)
            .call()
            .map_err(|e| Failed::Ureq(Box::new(e)))?;
        if !matches!(resp.status(), 301 | 302 | 303 | 307 | 308) {
            return Ok(resp);
        }
        let location = resp
            .header("Location")
            .ok_or_else(|| Failed::Refused(format!("{at}: a redirect without a Location")))?;
        let next = at
            .join(location)
            .map_err(|e| Failed::Refused(format!("{at}: redirect to {location:?}: {e}")))?;
        check(settings, &next)?;
        at = next;
    }
    Err(Failed::Refused(format!(
        "{url}: more than {MAX_HOPS} redirects"
    )))
}

/// Whether a redirect may go to `to`.
fn check(settings: &RegistrySettings, to: &url::Url) -> Result<(), Failed> {
    match to.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = match (to.host_str(), to.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                (None, _) => String::new(),
            };
            if settings.allows_http(&host) {
                Ok(())
            } else {
                Err(Failed::Refused(format!(
                    "redirected to {to}: plain HTTP to {host}, which is neither loopback nor \
                     listed as an insecure registry (refused)"
                )))
            }
        }
        other => Err(Failed::Refused(format!(
            "redirected to {to}: scheme {other} (refused)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_go_to_https_anywhere_and_to_http_only_where_allowed() {
        let settings = RegistrySettings {
            insecure: vec!["reg.lan:5000".into()],
            ..Default::default()
        };
        let ok = |u: &str| check(&settings, &url::Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://cdn.example/blob"));
        assert!(ok("http://127.0.0.1:8080/blob"));
        assert!(ok("http://reg.lan:5000/blob"));
        assert!(!ok("http://10.77.0.1:8080/blob"));
        assert!(!ok("http://reg.lan:6000/blob"));
        assert!(!ok("file:///etc/shadow"));
        assert!(!ok("ftp://cdn.example/blob"));
    }
}
