//! A client for the OCI distribution API (`/v2/`), as a registry client must behave:
//! HTTPS by default, plain HTTP only for loopback hosts and hosts the user lists as
//! insecure (tried after HTTPS fails, as Docker does); `GET /v2/` first, then anonymous,
//! basic or bearer-token authentication as the registry's challenge asks.
//!
//! A registry is not trusted: every answer is read with a bound before it is parsed
//! (manifests, token answers, catalog pages, error bodies), and credentials go to a token
//! realm only over HTTPS, or over plain HTTP only when the realm is on the registry's own
//! host and the registry itself is spoken to over plain HTTP.

pub mod auth;
mod redirect;
mod tls;
pub mod upload;

use crate::printable::escape_controls as printable;
use auth::{Challenge, Credentials, TokenResponse};
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Where docker.io's API really lives.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Manifests and indexes are small; a bigger answer is refused rather than buffered.
const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;
/// A token answer (a JWT is a few KiB).
const TOKEN_LIMIT: u64 = 1024 * 1024;
/// One page of the catalog (1000 names of at most 255 characters).
const CATALOG_PAGE_LIMIT: u64 = 4 * 1024 * 1024;
/// The whole catalog, every page together.
const CATALOG_LIMIT: u64 = 32 * 1024 * 1024;
/// An error answer's body (only its message is shown).
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// Every manifest media type capsa reads, for the `Accept` header.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How to reach registries: which hosts may use plain HTTP, extra CA certificates, and
/// stored credentials.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Hosts (`host` or `host:port`) allowed to fall back to plain HTTP.
    pub insecure: Vec<String>,
    /// `certs.d`: `<dir>/<host[:port]>/*.crt` are trusted for that host, as Docker's.
    pub certs_dir: Option<PathBuf>,
    /// The credential file `capsa login` writes.
    pub auth_file: Option<PathBuf>,
}

impl RegistrySettings {
    /// Whether `host` may be spoken to over plain HTTP: loopback, or listed as insecure.
    pub fn allows_http(&self, host: &str) -> bool {
        let name = host_without_port(host);
        let loopback = name == "localhost"
            || name
                .trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback || self.insecure.iter().any(|h| h == host || h == name)
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The root's `daemon.json` cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// It cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// daemon.json.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It does not parse.
    #[error("{}: {source}", .path.display())]
    Parse {
        /// daemon.json.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Registry settings of `root`: the `insecure` hosts plus `insecure-registries` of the
/// root's `daemon.json`, the root's `certs.d/`, and its credential file.
pub fn settings(
    root: &crate::root::StateRoot,
    mut insecure: Vec<String>,
) -> Result<RegistrySettings, SettingsError> {
    #[derive(serde::Deserialize, Default)]
    struct Daemon {
        #[serde(rename = "insecure-registries", default)]
        insecure_registries: Vec<String>,
    }
    let path = root.daemon_config();
    let daemon: Daemon = match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice(&b).map_err(|source| SettingsError::Parse { path, source })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Daemon::default(),
        Err(source) => return Err(SettingsError::Read { path, source }),
    };
    insecure.extend(daemon.insecure_registries);
    Ok(RegistrySettings {
        insecure,
        certs_dir: Some(root.certs_dir()),
        auth_file: Some(root.auth_file()),
    })
}

/// A failure talking to a registry, with what was asked and what came back (control
/// characters in the registry's own text escaped).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connection, TLS or protocol failure.
    #[error("{}: {}", printable(.registry), printable(.reason))]
    Transport {
        /// The registry host.
        registry: String,
        /// The cause.
        reason: String,
    },
    /// The TLS configuration for the registry could not be made.
    #[error("{}: {}", printable(.registry), printable(&.source.to_string()))]
    Tls {
        /// The registry host.
        registry: String,
        /// The cause.
        #[source]
        source: Box<tls::TlsError>,
    },
    /// The registry answered with an error status.
    #[error("{}: {status} {}", printable(.what), printable(.reason))]
    Status {
        /// What was asked for (`manifest busybox:latest`, `blob sha256:...`).
        what: String,
        /// The HTTP status.
        status: u16,
        /// The registry's own message, or the status text.
        reason: String,
    },
}

impl RegistryError {
    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            RegistryError::Transport { .. } | RegistryError::Tls { .. } => None,
        }
    }
}

/// A manifest or index as fetched: its bytes, declared media type and digest.
#[derive(Debug)]
pub struct Fetched {
    /// The raw body (the digest is computed over exactly these bytes).
    pub bytes: Vec<u8>,
    /// `Content-Type` of the answer.
    pub media_type: String,
    /// The digest of `bytes`.
    pub digest: super::digest::Digest,
}

/// A connection to one registry, authenticated as its `/v2/` challenge asks.
pub struct Registry {
    host: String,
    base: String,
    agent: ureq::Agent,
    /// What `GET /v2/` asked for; a registry open to anonymous reads may ask only when a
    /// push begins (see [`upload`]), and is then held to that.
    challenge: std::sync::OnceLock<Challenge>,
    credentials: Option<Credentials>,
    /// Bearer tokens by scope; basic auth needs none.
    tokens: Mutex<Vec<(String, String)>>,
    /// Which hosts a redirect may reach over plain HTTP ([`redirect`]).
    settings: RegistrySettings,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base", &self.base)
            .finish()
    }
}

impl Registry {
    /// Connects to `host` (`docker.io`, `127.0.0.1:5000`): `GET /v2/`, HTTPS first, HTTP
    /// after it for hosts that allow it. `credentials` overrides the stored ones.
    pub fn connect(
        host: &str,
        settings: &RegistrySettings,
        credentials: Option<Credentials>,
    ) -> Result<Registry, RegistryError> {
        let api_host = if host == super::reference::DEFAULT_DOMAIN {
            DOCKER_HUB_API
        } else {
            host
        };
        let transport = |reason: String| RegistryError::Transport {
            registry: host.to_string(),
            reason,
        };
        let tls = tls::client_config(settings.certs_dir.as_deref(), host).map_err(|source| {
            RegistryError::Tls {
                registry: host.to_string(),
                source: Box::new(source),
            }
        })?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            // Followed by hand (`redirect`): never to plain HTTP on another host.
            .redirects(0)
            .user_agent(concat!("capsa/", env!("CARGO_PKG_VERSION")))
            .build();
        let credentials = match credentials {
            Some(c) => Some(c),
            None => match &settings.auth_file {
                Some(file) => auth::stored_credentials(file, host)
                    .map_err(|e| transport(format!("credentials: {e}")))?,
                None => None,
            },
        };
        let mut schemes = vec!["https"];
        if settings.allows_http(host) {
            schemes.push("http");
        }
        let mut failures = Vec::new();
        for scheme in schemes {
            let base = format!("{scheme}://{api_host}");
            let probed =
                match redirect::call(&agent, settings, "GET", &format!("{base}/v2/"), |r, _| r) {
                    Ok(resp) => Ok(resp),
                    Err(redirect::Failed::Ureq(e)) => Err(*e),
                    Err(redirect::Failed::Refused(why)) => {
                        failures.push(format!("{scheme}: {why}"));
                        continue;
                    }
                };
            match probed {
                Ok(_) => {
                    return Ok(
                        Registry::new(host, base, agent, None, credentials).with_settings(settings)
                    )
                }
                Err(ureq::Error::Status(401, resp)) => {
                    let challenge = resp
                        .header("WWW-Authenticate")
                        .and_then(Challenge::parse)
                        .ok_or_else(|| {
                            transport("401 without an authentication scheme capsa speaks".into())
                        })?;
                    let reg = Registry::new(host, base, agent, Some(challenge), credentials)
                        .with_settings(settings);
                    return Ok(reg);
                }
                Err(ureq::Error::Status(code, resp)) if !failures.is_empty() => {
                    // HTTP after HTTPS failed: a TLS-only server answers 400 here; the
                    // HTTPS failure is the one that matters.
                    failures.push(format!("{scheme}: {code} {}", error_message(resp)));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(RegistryError::Status {
                        what: format!("{host}: GET /v2/"),
                        status: code,
                        reason: error_message(resp),
                    })
                }
                Err(ureq::Error::Transport(t)) => failures.push(format!("{scheme}: {t}")),
            }
        }
        Err(transport(failures.join("; ")))
    }

    fn new(
        host: &str,
        base: String,
        agent: ureq::Agent,
        challenge: Option<Challenge>,
        credentials: Option<Credentials>,
    ) -> Registry {
        let learned = std::sync::OnceLock::new();
        if let Some(c) = challenge {
            let _ = learned.set(c);
        }
        Registry {
            host: host.to_string(),
            base,
            agent,
            challenge: learned,
            credentials,
            tokens: Mutex::new(Vec::new()),
            settings: RegistrySettings::default(),
        }
    }

    /// The settings redirects are checked against.
    fn with_settings(mut self, settings: &RegistrySettings) -> Registry {
        self.settings = settings.clone();
        self
    }

    /// A body-less request, redirects followed as [`redirect`] allows; an error status is
    /// a [`RegistryError::Status`] naming `what`.
    fn call_following(
        &self,
        method: &str,
        url: &str,
        what: &str,
        build: impl Fn(ureq::Request, bool) -> ureq::Request,
    ) -> Result<ureq::Response, RegistryError> {
        match redirect::call(&self.agent, &self.settings, method, url, build) {
            Ok(resp) => Ok(resp),
            Err(redirect::Failed::Refused(why)) => Err(self.transport(format!("{what}: {why}"))),
            Err(redirect::Failed::Ureq(e)) => match *e {
                ureq::Error::Status(status, resp) => Err(RegistryError::Status {
                    what: what.to_string(),
                    status,
                    reason: error_message(resp),
                }),
                ureq::Error::Transport(t) => Err(self.transport(format!("{what}: {t}"))),
            },
        }
    }

    /// The host as the user named it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks that the stored or given credentials are accepted (what `login` verifies).
    pub fn check_login(&self) -> Result<(), RegistryError> {
        match self.challenge.get() {
            None => Ok(()),
            Some(_) if self.credentials.is_none() => Err(RegistryError::Status {
                what: format!("login to {}", self.host),
                status: 401,
                reason: "the registry asks for credentials".into(),
            }),
            Some(Challenge::Basic) => {
                self.get(&format!("{}/v2/", self.base), None, "login")?;
                Ok(())
            }
            Some(Challenge::Bearer { .. }) => self.token("").map(|_| ()),
        }
    }

    /// Fetches the manifest or index `reference` (tag or digest) of `repo`.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<Fetched, RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let what = format!("manifest {}/{repo}:{reference}", self.host);
        let accept = MANIFEST_TYPES.join(", ");
        let resp = self.get(&url, Some(&accept), &what)?;
        let media_type = resp
            .header("Content-Type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let bytes = read_bounded(resp, MANIFEST_LIMIT)
            .map_err(|e| self.transport(format!("{what}: {e}")))?;
        let digest = super::digest::Digest::of(&bytes);
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// Opens the blob `digest` of `repo` as a stream (redirects followed).
    pub fn blob(&self, repo: &str, digest: &str) -> Result<Box<dyn Read + Send>, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let what = format!("blob {digest} of {}/{repo}", self.host);
        Ok(self.get(&url, None, &what)?.into_reader())
    }

    /// Every repository name in the registry's catalog (following `Link` pages).
    pub fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let mut names = Vec::new();
        let mut url = format!("{}/v2/_catalog?n=1000", self.base);
        let what = format!("catalog of {}", self.host);
        let mut budget = CATALOG_LIMIT;
        for _ in 0..1000 {
            let resp = self.get(&url, None, &what)?;
            let next = resp.header("Link").and_then(next_link);
            let body = read_bounded(resp, CATALOG_PAGE_LIMIT.min(budget))
                .map_err(|e| self.transport(format!("{what}: {e}")))?;
            budget -= body.len() as u64;
            let page: Page =
                super::json::parse(&body).map_err(|e| self.transport(format!("{what}: {e}")))?;
            names.extend(page.repositories);
            match next {
                Some(path) => url = format!("{}{path}", self.base),
                None => break,
            }
        }
        Ok(names)
    }

    fn transport(&self, reason: String) -> RegistryError {
        RegistryError::Transport {
            registry: self.host.clone(),
            reason,
        }
    }

    /// GET with whatever authorization the registry asked for, for the scope `url` needs.
    fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<ureq::Response, RegistryError> {
        let auth = self.authorization(url)?;
        self.call_following("GET", url, what, |mut req, same_origin| {
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            match (&auth, same_origin) {
                (Some(header), true) => req.set("Authorization", header),
                _ => req,
            }
        })
    }

    fn authorization(&self, url: &str) -> Result<Option<String>, RegistryError> {
        self.authorization_for(&scope_of(url))
    }

    /// The `Authorization` header for requests that need `scope` (space-separated scopes
    /// when a request needs several, as a cross-repository mount does).
    fn authorization_for(&self, scope: &str) -> Result<Option<String>, RegistryError> {
        match self.challenge.get() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials.as_ref().map(Credentials::basic_header)),
            Some(Challenge::Bearer { .. }) => {
                let token = self.token(scope)?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// A bearer token for `scope` (space-separated scopes are asked for together; cached
    /// for the life of this connection).
    fn token(&self, scope: &str) -> Result<String, RegistryError> {
        let Some(Challenge::Bearer { realm, service }) = self.challenge.get() else {
            return Ok(String::new());
        };
        let mut cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, t)) = cache.iter().find(|(s, _)| s == scope) {
            return Ok(t.clone());
        }
        let what = format!("token from {realm}");
        let mut url = url::Url::parse(realm).map_err(|e| self.transport(format!("{what}: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(s) = service {
                query.append_pair("service", s);
            }
            for one in scope.split(' ').filter(|s| !s.is_empty()) {
                query.append_pair("scope", one);
            }
        }
        let basic = match &self.credentials {
            Some(c) => {
                self.may_send_credentials(&self.agent.get(url.as_str()))
                    .map_err(|why| self.transport(format!("{what}: {why}")))?;
                Some(c.basic_header())
            }
            None => None,
        };
        let resp = self.call_following("GET", url.as_str(), &what, |req, same_origin| {
            match (&basic, same_origin) {
                (Some(header), true) => req.set("Authorization", header),
                _ => req,
            }
        })?;
        let body =
            read_bounded(resp, TOKEN_LIMIT).map_err(|e| self.transport(format!("{what}: {e}")))?;
        let token = super::json::parse::<TokenResponse>(&body)
            .map_err(|e| self.transport(format!("{what}: {e}")))?
            .into_token()
            .ok_or_else(|| self.transport(format!("{what}: no token in the answer")))?;
        cache.push((scope.to_string(), token.clone()));
        Ok(token)
    }
}

impl Registry {
    /// Whether the credentials may go with the token request `realm`: over HTTPS, or over
    /// plain HTTP to the registry's own host when the registry is itself reached over
    /// plain HTTP. Err says why not.
    fn may_send_credentials(&self, realm: &ureq::Request) -> Result<(), CredentialsRefused> {
        let realm = realm
            .request_url()
            .map_err(|e| CredentialsRefused::RealmUrl(Box::new(e)))?;
        let registry = self
            .agent
            .get(&self.base)
            .request_url()
            .map_err(|e| CredentialsRefused::RegistryUrl(Box::new(e)))?;
        credentials_allowed(&realm, &registry)
    }
}

/// Why credentials are not sent to a token realm.
#[derive(Debug, thiserror::Error)]
enum CredentialsRefused {
    #[error("not a URL: {0}")]
    RealmUrl(#[source] Box<ureq::Error>),
    #[error("registry URL: {0}")]
    RegistryUrl(#[source] Box<ureq::Error>),
    #[error("the registry is reached over HTTPS but its token realm is plain HTTP: credentials for {registry} are not sent in the clear")]
    Downgrade { registry: String },
    #[error("the token realm is plain HTTP on another host ({realm}): credentials for {registry} are not sent there")]
    OtherHost { realm: String, registry: String },
    #[error("the token realm's scheme {0:?} is neither https nor http")]
    Scheme(String),
}

/// Why a registry's answer could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("{0}")]
    Read(#[source] std::io::Error),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(u64),
}

/// The rule of [`Registry::may_send_credentials`] on parsed URLs.
fn credentials_allowed(
    realm: &ureq::RequestUrl,
    registry: &ureq::RequestUrl,
) -> Result<(), CredentialsRefused> {
    match realm.scheme() {
        "https" => Ok(()),
        "http" if registry.scheme() != "http" => Err(CredentialsRefused::Downgrade {
            registry: registry.host().to_string(),
        }),
        "http" if realm.host() != registry.host() => Err(CredentialsRefused::OtherHost {
            realm: realm.host().to_string(),
            registry: registry.host().to_string(),
        }),
        "http" => Ok(()),
        other => Err(CredentialsRefused::Scheme(other.into())),
    }
}

/// The body of `resp`, refused when longer than `limit` bytes (never buffered beyond it).
fn read_bounded(resp: ureq::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(BodyError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(bytes)
}

/// The token scope a registry URL needs: `repository:<name>:pull` or the catalog's.
fn scope_of(url: &str) -> String {
    let path = url.split_once("/v2/").map_or("", |(_, p)| p);
    if path.starts_with("_catalog") {
        return "registry:catalog:*".into();
    }
    let repo = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .find_map(|marker| path.split_once(marker).map(|(r, _)| r));
    repo.map_or_else(String::new, |r| format!("repository:{r}:pull"))
}

/// `</v2/_catalog?last=x&n=1000>; rel="next"` -> `/v2/_catalog?last=x&n=1000`.
fn next_link(header: &str) -> Option<String> {
    let (target, rel) = header.split_once(';')?;
    rel.contains("next")
        .then(|| target.trim().trim_matches(['<', '>']).to_string())
}

/// The registry's error message (`{"errors":[{"code":..,"message":..}]}`) or the status text.
fn error_message(resp: ureq::Response) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let status_text = resp.status_text().to_string();
    let mut body = String::new();
    let _ = resp
        .into_reader()
        .take(ERROR_BODY_LIMIT)
        .read_to_string(&mut body);
    match serde_json::from_str::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => status_text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_hosts_may_use_http() {
        let s = RegistrySettings {
            insecure: vec!["reg.lan:5000".into()],
            ..Default::default()
        };
        assert!(s.allows_http("127.0.0.1:5000"));
        assert!(s.allows_http("localhost:5000"));
        assert!(s.allows_http("[::1]:5000"));
        assert!(s.allows_http("reg.lan:5000"));
        assert!(!s.allows_http("reg.lan:6000"));
        assert!(!s.allows_http("docker.io"));
    }

    #[test]
    fn scopes_follow_the_url() {
        assert_eq!(
            scope_of("https://r/v2/library/busybox/manifests/latest"),
            "repository:library/busybox:pull"
        );
        assert_eq!(
            scope_of("https://r/v2/a/b/blobs/sha256:00"),
            "repository:a/b:pull"
        );
        assert_eq!(scope_of("https://r/v2/_catalog?n=1"), "registry:catalog:*");
    }

    #[test]
    fn credentials_go_to_https_realms_or_the_plain_http_registrys_own_host() {
        let url = |u: &str| ureq::get(u).request_url().unwrap();
        let allowed =
            |realm: &str, registry: &str| credentials_allowed(&url(realm), &url(registry));
        assert!(allowed(
            "https://auth.docker.io/token",
            "https://registry-1.docker.io"
        )
        .is_ok());
        assert!(allowed("https://auth.example/token", "http://127.0.0.1:5000").is_ok());
        assert!(allowed("http://127.0.0.1:6000/token", "http://127.0.0.1:5000").is_ok());
        let err = allowed("http://127.0.0.2:5002/token", "http://127.0.0.1:5001")
            .unwrap_err()
            .to_string();
        assert!(err.contains("127.0.0.2"), "{err}");
        let err = allowed("http://reg.example/token", "https://reg.example")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTPS"), "{err}");
        assert!(allowed("ftp://reg.example/token", "http://reg.example").is_err());
    }

    #[test]
    fn catalog_pages_follow_link_headers() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
    }
}
