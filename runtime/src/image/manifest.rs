//! Manifests and indexes in both dialects (OCI and Docker's v2 / manifest list), and the
//! choice of one platform's manifest from an index.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// Why a manifest document, a platform or an index entry was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// An index that does not parse.
    #[error("malformed index: {0}")]
    Index(#[source] super::json::JsonError),
    /// A manifest that does not parse.
    #[error("malformed manifest: {0}")]
    Manifest(#[source] super::json::JsonError),
    /// A document that is not JSON at all (its media type was to be sniffed).
    #[error("malformed manifest: {0}")]
    NotJson(#[source] serde_json::Error),
    /// Neither `manifests` nor `layers`.
    #[error("document is neither a manifest nor an index")]
    Neither,
    /// Docker's schema 1.
    #[error("Docker schema 1 manifests are not supported (deprecated since 2017)")]
    Schema1,
    /// Any other media type.
    #[error("unknown manifest media type {0:?}")]
    MediaType(String),
    /// A `--platform` that is not `os/arch[/variant]`.
    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    Platform(String),
    /// The index has no entry for the platform; `offered` lists what it has.
    #[error("no matching manifest for {want} in the manifest list entries (offered: {offered})")]
    NoMatch {
        /// The platform asked for (`os/arch[/variant]`).
        want: String,
        /// What the index offers, or `none`.
        offered: String,
    },
}

/// A parsed manifest document.
#[derive(Debug)]
pub enum ManifestDoc {
    /// A multi-platform index (OCI index or Docker manifest list).
    Index(Box<ImageIndex>),
    /// One image's manifest.
    Image(Box<ImageManifest>),
}

/// Parses `bytes` by its declared `media_type`, or, when the server did not say (or said
/// something generic), by the document's own `mediaType` and shape.
pub fn parse(bytes: &[u8], media_type: &str) -> Result<ManifestDoc, ManifestError> {
    let declared = match media_type {
        "" | "application/json" | "text/plain" | "application/octet-stream" => {
            sniff_media_type(bytes)?
        }
        other => other.to_string(),
    };
    match declared.as_str() {
        OCI_INDEX | DOCKER_LIST => super::json::parse::<ImageIndex>(bytes)
            .map(|i| ManifestDoc::Index(Box::new(i)))
            .map_err(ManifestError::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m = super::json::parse::<ImageManifest>(bytes).map_err(ManifestError::Manifest)?;
            Ok(ManifestDoc::Image(Box::new(m)))
        }
        t if t.starts_with(DOCKER_SCHEMA1) => Err(ManifestError::Schema1),
        other => Err(ManifestError::MediaType(other.into())),
    }
}

/// The media type a manifest document declares for itself, or guessed from its fields.
fn sniff_media_type(bytes: &[u8]) -> Result<String, ManifestError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(ManifestError::NotJson)?;
    if let Some(t) = v.get("mediaType").and_then(|t| t.as_str()) {
        return Ok(t.to_string());
    }
    if v.get("manifests").is_some() {
        Ok(OCI_INDEX.into())
    } else if v.get("layers").is_some() {
        Ok(OCI_MANIFEST.into())
    } else {
        Err(ManifestError::Neither)
    }
}

/// An OS/architecture[/variant] triple, as `--platform` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`...
    pub architecture: String,
    /// `v7`, `v8`... when asked for.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, ManifestError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty());
        if !ok {
            return Err(ManifestError::Platform(s.into()));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// The machine capsa runs on, in OCI's names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The index entry for `want`. Attestation entries (`unknown/unknown`) never match; the
/// error lists what the index does offer.
pub fn select<'a>(index: &'a ImageIndex, want: &Platform) -> Result<&'a Descriptor, ManifestError> {
    let mut offered = Vec::new();
    for d in index.manifests() {
        let Some(p) = d.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        if os == "unknown" || arch == "unknown" {
            continue;
        }
        let variant_ok = match &want.variant {
            None => true,
            Some(v) => p.variant().as_deref() == Some(v.as_str()),
        };
        if os == want.os && arch == want.architecture && variant_ok {
            return Ok(d);
        }
        let mut label = format!("{os}/{arch}");
        if let Some(v) = p.variant() {
            label.push('/');
            label.push_str(v);
        }
        offered.push(label);
    }
    Err(ManifestError::NoMatch {
        want: want.to_string(),
        offered: if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,"platform":{"os":"unknown","architecture":"unknown"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}"#;

    fn index() -> ImageIndex {
        match parse(INDEX.as_bytes(), "").unwrap() {
            ManifestDoc::Index(i) => *i,
            ManifestDoc::Image(_) => panic!("parsed as a manifest"),
        }
    }

    #[test]
    fn the_host_platform_is_picked_and_attestations_skipped() {
        let amd = Platform::parse("linux/amd64").unwrap();
        assert!(select(&index(), &amd)
            .unwrap()
            .digest()
            .to_string()
            .contains("3333"));
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert!(select(&index(), &arm)
            .unwrap()
            .digest()
            .to_string()
            .contains("2222"));
    }

    #[test]
    fn a_missing_platform_lists_what_is_offered() {
        let err = select(&index(), &Platform::parse("linux/s390x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/s390x"), "{err}");
        assert!(err.contains("linux/arm64/v8, linux/amd64"), "{err}");
        assert!(!err.contains("unknown"), "{err}");
    }

    #[test]
    fn a_malformed_manifest_names_the_field() {
        let err = parse(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#,
            "",
        )
        .unwrap_err().to_string();
        assert!(
            err.starts_with("malformed manifest: config.digest: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_and_legacy_media_types_are_named() {
        let err = parse(b"{}", "application/x-thing").unwrap_err().to_string();
        assert!(err.contains("application/x-thing"));
        let err = parse(
            b"{}",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("schema 1"));
        assert!(Platform::parse("linux").is_err());
    }
}
