//! Registry authentication: the `WWW-Authenticate` challenge, bearer tokens, and the
//! credential file `capsa login` writes.
//!
//! The credential file has the shape of Docker's `config.json` (`{"auths": {host: {"auth":
//! base64(user:password)}}}`), is created 0600 and replaced atomically.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A user name and password (or token) for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl Credentials {
    /// The `Authorization: Basic ...` header value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// What a registry's 401 asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`: send the credentials with every request.
    Basic,
    /// `Bearer realm="...",service="..."`: get a token from `realm` for each scope.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to pass back, if any.
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value; `None` for schemes capsa does not speak.
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let params = parse_params(params);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
            }),
            _ => None,
        }
    }
}

/// `key="value", key2=value2` -> map (quoted values may hold commas).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The token endpoint's answer (Docker's `token`, OAuth's `access_token`).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

impl TokenResponse {
    /// The token, whichever field carries it.
    pub fn into_token(self) -> Option<String> {
        self.token.or(self.access_token).filter(|t| !t.is_empty())
    }
}

/// The credential file: `{"auths": {"registry": {"auth": "base64(user:pass)"}}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AuthEntry {
    auth: String,
}

/// Reads the credentials stored for `registry`, if any.
pub fn stored_credentials(file: &Path, registry: &str) -> std::io::Result<Option<Credentials>> {
    let auths = read_auth_file(file)?;
    let Some(entry) = auths.auths.get(registry) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the entry for {registry} is not base64(user:password)"),
        )
    };
    let text = decoded.ok_or_else(bad)?;
    let (username, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

/// Stores `creds` for `registry` (replacing what was there), or removes the entry when
/// `creds` is `None`. Returns whether an entry existed before.
pub fn store_credentials(
    file: &Path,
    registry: &str,
    creds: Option<&Credentials>,
) -> std::io::Result<bool> {
    let mut auths = read_auth_file(file)?;
    let existed = match creds {
        Some(c) => {
            let raw = format!("{}:{}", c.username, c.password);
            let auth = base64::engine::general_purpose::STANDARD.encode(raw);
            auths
                .auths
                .insert(registry.to_string(), AuthEntry { auth })
                .is_some()
        }
        None => auths.auths.remove(registry).is_some(),
    };
    let data = serde_json::to_vec_pretty(&auths).expect("credential map serialises");
    write_private(file, &data)?;
    Ok(existed)
}

fn read_auth_file(file: &Path) -> std::io::Result<AuthFile> {
    match std::fs::read(file) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", file.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(e),
    }
}

/// Writes `data` to a 0600 temporary beside `file`, syncs it and renames it over `file`.
fn write_private(file: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_like_docker_hub_sends_them() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn credentials_round_trip_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        assert!(!store_credentials(&file, "r:5000", Some(&c)).unwrap());
        assert_eq!(stored_credentials(&file, "r:5000").unwrap(), Some(c));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(store_credentials(&file, "r:5000", None).unwrap());
        assert_eq!(stored_credentials(&file, "r:5000").unwrap(), None);
    }
}
