//! Parsing the JSON documents of images (configs, manifests, indexes, `manifest.json`,
//! registry answers): an error names the field that is wrong (`rootfs.diff_ids[0]`,
//! `layers[2].digest`) and says why, with serde's line and column.

use serde::de::DeserializeOwned;

/// Parses `bytes` as a `T`; the error reads `FIELD: WHY at line L column C`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(describe)?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

fn describe(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    if path == "." {
        e.into_inner().to_string()
    } else {
        format!("{path}: {}", e.into_inner())
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
        .unwrap_err();
        assert!(err.starts_with("rootfs.diff_ids[0]: invalid type"), "{err}");
        assert!(err.contains("column"), "{err}");
        let err = parse::<ImageManifest>(
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:12","size":1},"layers":[]}"#,
        )
        .unwrap_err();
        assert!(err.starts_with("config.digest: "), "{err}");
        let err = parse::<ImageConfiguration>(b"{}").unwrap_err();
        assert!(err.starts_with("missing field `architecture`"), "{err}");
        let err = parse::<serde_json::Value>(b"{} x").unwrap_err();
        assert!(err.contains("trailing"), "{err}");
    }
}
