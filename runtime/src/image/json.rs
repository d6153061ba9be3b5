//! Parsing the JSON documents of images (configs, manifests, indexes, `manifest.json`,
//! registry answers): an error names the field that is wrong (`rootfs.diff_ids[0]`,
//! `layers[2].digest`) and says why, with serde's line and column.

use serde::de::DeserializeOwned;

/// A JSON document that does not parse as what it should be.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// A field is wrong.
    #[error("{path}: {source}")]
    Field {
        /// Where (`rootfs.diff_ids[0]`).
        path: String,
        /// serde's reason, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The document as a whole is wrong (not JSON, trailing bytes, a missing field at top).
    #[error("{0}")]
    Document(#[source] serde_json::Error),
}

/// Parses `bytes` as a `T`; the error reads `FIELD: WHY at line L column C`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(describe)?;
    de.end().map_err(JsonError::Document)?;
    Ok(value)
}

fn describe(e: serde_path_to_error::Error<serde_json::Error>) -> JsonError {
    let path = e.path().to_string();
    if path == "." {
        JsonError::Document(e.into_inner())
    } else {
        JsonError::Field {
            path,
            source: e.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ImageConfiguration, ImageManifest};

    #[test]
    fn errors_name_the_field_and_the_cause() {
        let err = parse::<ImageConfiguration>(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[5]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("rootfs.diff_ids[0]: invalid type"), "{err}");
        assert!(err.contains("column"), "{err}");
        let err = parse::<ImageManifest>(
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:12","size":1},"layers":[]}"#,
        )
        .unwrap_err().to_string();
        assert!(err.starts_with("config.digest: "), "{err}");
        let err = parse::<ImageConfiguration>(b"{}").unwrap_err().to_string();
        assert!(err.starts_with("missing field `architecture`"), "{err}");
        let err = parse::<serde_json::Value>(b"{} x").unwrap_err().to_string();
        assert!(err.contains("trailing"), "{err}");
    }
}
