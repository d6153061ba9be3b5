//! Image references, normalised as Docker does: `busybox` is
//! `docker.io/library/busybox:latest`, and is shown to the user in its short form again.

use super::ImageError;

/// The default registry for names without a domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The default tag.
pub const DEFAULT_TAG: &str = "latest";
/// The digest algorithm of image IDs, which no repository may be named after: `sha256:<hex>`
/// must always read as an ID, never as the repository `sha256` with a tag.
const ID_ALGORITHM: &str = "sha256";
/// Hex digits in a full image ID.
const ID_HEX_LEN: usize = 64;

/// The hex digits of `input` when it is written as an image ID (`sha256:<hex>`, a prefix
/// allowed, or a bare full `<64 hex>`), as Docker reads these forms: always as IDs, never as
/// names. None for anything else (a short bare hex string may still be a name first).
pub fn image_id_form(input: &str) -> Option<&str> {
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    match input
        .strip_prefix(ID_ALGORITHM)
        .and_then(|r| r.strip_prefix(':'))
    {
        Some(hex) => is_hex(hex).then_some(hex),
        None => (input.len() == ID_HEX_LEN && is_hex(input)).then_some(input),
    }
}

/// A parsed, normalised reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host[:port].
    pub domain: String,
    /// Repository path (`library/busybox`).
    pub path: String,
    /// Tag, `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned by digest.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Reference, ImageError> {
        let bad = |reason| ImageError::InvalidReference {
            reference: input.to_string(),
            reason,
        };
        if input.is_empty() || input.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        if image_id_form(input).is_some() {
            return Err(bad(
                "a name cannot be written as an image ID (sha256:<hex> or 64 hexadecimal digits)",
            ));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                if super::digest::Digest::parse(d).is_err() {
                    return Err(bad("digest must be sha256:<64 hex digits>"));
                }
                (n, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A colon after the last slash separates the tag (a colon before it is a port).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(name_tag[last_slash + i + 1..].to_string()),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("tag must be [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (domain, path) = split_domain(name);
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(
                "repository name must be lowercase letters, digits and separators (. _ __ -)",
            ));
        }
        if domain == DEFAULT_DOMAIN && path == format!("library/{ID_ALGORITHM}") {
            return Err(bad(
                "the repository name sha256 is refused: sha256:<tag> would read as an image ID",
            ));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `docker.io/library/busybox` (no tag).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The fully qualified form, used as the key in the image index.
    pub fn full(&self) -> String {
        let mut s = self.repository();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The repository as Docker shows it: `busybox`, `user/app`, `registry:5000/app`.
    pub fn familiar_repository(&self) -> String {
        familiar(&self.repository())
    }

    /// The whole reference as Docker shows it: `busybox:latest`,
    /// `localhost:5000/app@sha256:...`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_repository();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        } else if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// Shortens a fully qualified repository the way Docker displays it.
pub fn familiar(repository: &str) -> String {
    let without_domain = repository
        .strip_prefix("docker.io/")
        .map(|p| p.strip_prefix("library/").unwrap_or(p));
    without_domain.unwrap_or(repository).to_string()
}

fn split_domain(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ if !name.contains('/') => (DEFAULT_DOMAIN.to_string(), format!("library/{name}")),
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    }
}

fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !c.is_empty()
        && c.bytes().next().is_some_and(alnum)
        && c.bytes().last().is_some_and(alnum)
        && c.bytes().all(|b| alnum(b) || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_normalise_like_docker() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.full(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_repository(), "busybox");
        let r = Reference::parse("user/app:1.2").unwrap();
        assert_eq!(r.full(), "docker.io/user/app:1.2");
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(r.full(), "localhost:5000/app:latest");
        assert_eq!(r.familiar_repository(), "localhost:5000/app");
    }

    #[test]
    fn digests_pin_without_default_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "a//b",
            "busybox@sha256:xyz",
            "-x",
            "a:b c",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_written_as_image_ids_are_refused() {
        let hex = "0123456789abcdef".repeat(4);
        for bad in [
            format!("sha256:{hex}"),
            hex.clone(),
            "sha256:1111".into(),
            "sha256".into(),
            "sha256:latest".into(),
            "library/sha256:v1".into(),
            format!("docker.io/library/sha256:{hex}"),
        ] {
            assert!(Reference::parse(&bad).is_err(), "{bad:?} accepted");
        }
        // Not an ID: a different length, a tag, or a repository of another owner.
        for good in [
            hex[..63].to_string(),
            format!("{hex}:v1"),
            "cafe".into(),
            "me/sha256:1".into(),
            "localhost:5000/sha256".into(),
        ] {
            assert!(Reference::parse(&good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn id_forms_are_recognised() {
        let hex = "a".repeat(64);
        assert_eq!(image_id_form(&format!("sha256:{hex}")), Some(hex.as_str()));
        assert_eq!(image_id_form(&hex), Some(hex.as_str()));
        assert_eq!(image_id_form("sha256:ab12"), Some("ab12"));
        for not in ["ab12", "sha256:", "sha256:xyz", "busybox", &hex[..63]] {
            assert_eq!(image_id_form(not), None, "{not:?}");
        }
    }
}
