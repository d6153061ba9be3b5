//! `capsa import`: a root file system tarball (plain or gzip) becomes a one-layer image,
//! as `docker import` makes one. The tarball is read once, streamed: it is hashed as stored
//! (the blob digest), decompressed and hashed again (the diff ID) while it is unpacked.

use super::digest::{sha256_of, HashingReader};
use super::store::remove_any;
use super::unpack::unpack_layer;
use super::{ImageError, ImageStore, Reference};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What `import` made.
#[derive(Debug)]
pub struct Imported {
    /// The new image's ID (config digest).
    pub id: String,
}

/// A reader that copies every byte it yields into a writer (the blob being stored).
struct Tee<R, W> {
    inner: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Imports the tarball `input` (`source` names it in errors) as an image called `name`,
/// applying Dockerfile-style `changes` (`CMD ["sh"]`, `ENV K=V`, ...).
pub fn import(
    store: &ImageStore,
    input: impl Read,
    source: &str,
    name: Option<&Reference>,
    changes: &[String],
) -> Result<Imported, ImageError> {
    let container_config = parse_changes(changes)?;
    let staging = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(store.tmp_dir())
        .map_err(|e| ImageError::io(&store.tmp_dir(), e))?;
    let layer_err = |reason: String| ImageError::Layer {
        layer: source.to_string(),
        reason,
    };
    let blob_tmp = staging.path().join("blob");
    let tree = staging.path().join("layer");
    std::fs::create_dir_all(tree.join("diff")).map_err(|e| ImageError::io(&tree, e))?;
    let blob_file = File::create(&blob_tmp).map_err(|e| ImageError::io(&blob_tmp, e))?;

    let mut stored = BufReader::new(HashingReader::new(Tee {
        inner: input,
        copy: std::io::BufWriter::new(blob_file),
    }));
    let gzip = stored
        .fill_buf()
        .map_err(|e| layer_err(e.to_string()))?
        .starts_with(&GZIP_MAGIC);
    let (diff_id, _) = if gzip {
        let mut plain = HashingReader::new(flate2::bufread::GzDecoder::new(&mut stored));
        unpack_layer(&mut plain, &tree.join("diff")).map_err(layer_err)?;
        plain
            .finish()
            .map_err(|e| layer_err(format!("gzip stream: {e}")))?
    } else {
        let mut plain = HashingReader::new(&mut stored);
        unpack_layer(&mut plain, &tree.join("diff")).map_err(layer_err)?;
        plain.finish().map_err(|e| layer_err(e.to_string()))?
    };
    let hashing = stored.into_inner();
    let (blob_digest, blob_size, tee) = hashing
        .finish_into_inner()
        .map_err(|e| layer_err(e.to_string()))?;
    // The stored copy must be whole before it is named by its digest.
    let blob = tee
        .copy
        .into_inner()
        .map_err(|e| ImageError::io(&blob_tmp, e.into_error()))?;
    blob.sync_all().map_err(|e| ImageError::io(&blob_tmp, e))?;

    // Content-addressed commits: the layer tree, then the blob, then config and manifest.
    let layer_dest = store.layer_dir(&diff_id);
    store.commit_staged(&tree, &layer_dest)?;
    store.commit_staged(&blob_tmp, &store.blob_path(&blob_digest)?)?;

    let now = crate::timefmt::rfc3339(std::time::SystemTime::now());
    let config = json!({
        "created": now,
        "architecture": "amd64",
        "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": now, "created_by": format!("capsa import {source}")}],
    });
    let config_bytes = serde_json::to_vec(&config).expect("JSON values serialise");
    let config_digest = put_small_blob(store, staging.path(), &config_bytes)?;
    let layer_media_type = if gzip {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": [{"mediaType": layer_media_type, "digest": blob_digest, "size": blob_size}],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON values serialise");
    let manifest_digest = put_small_blob(store, staging.path(), &manifest_bytes)?;
    store.add_image(&manifest_digest, &config_digest, name)?;
    Ok(Imported { id: config_digest })
}

/// Imports from a file path, or standard input for `-`.
pub fn import_path(
    store: &ImageStore,
    path: &str,
    name: Option<&Reference>,
    changes: &[String],
) -> Result<Imported, ImageError> {
    if path == "-" {
        return import(store, std::io::stdin().lock(), "-", name, changes);
    }
    let file = File::open(path).map_err(|e| ImageError::io(Path::new(path), e))?;
    import(store, file, path, name, changes)
}

fn put_small_blob(store: &ImageStore, staging: &Path, data: &[u8]) -> Result<String, ImageError> {
    let digest = sha256_of(data);
    let tmp = staging.join(digest.trim_start_matches("sha256:"));
    std::fs::write(&tmp, data).map_err(|e| ImageError::io(&tmp, e))?;
    let dest = store.blob_path(&digest)?;
    store.commit_staged(&tmp, &dest)?;
    if tmp.exists() {
        let _ = remove_any(&tmp);
    }
    Ok(digest)
}

/// Turns `--change` instructions into an image config's `config` object.
fn parse_changes(changes: &[String]) -> Result<Value, ImageError> {
    let mut cfg = Map::new();
    for change in changes {
        let bad = || ImageError::BadChange(change.clone());
        let (verb, arg) = change
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(bad)?;
        let arg = arg.trim();
        match verb.to_ascii_uppercase().as_str() {
            "CMD" => {
                cfg.insert("Cmd".into(), exec_form(arg));
            }
            "ENTRYPOINT" => {
                cfg.insert("Entrypoint".into(), exec_form(arg));
            }
            "WORKDIR" => {
                cfg.insert("WorkingDir".into(), json!(arg));
            }
            "USER" => {
                cfg.insert("User".into(), json!(arg));
            }
            "ENV" => {
                let (k, v) = arg
                    .split_once('=')
                    .or_else(|| arg.split_once(' '))
                    .ok_or_else(bad)?;
                let env = cfg.entry("Env").or_insert_with(|| json!([]));
                if let Value::Array(list) = env {
                    list.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&format!("{k}="))));
                    list.push(json!(format!("{k}={}", v.trim())));
                }
            }
            "EXPOSE" => {
                let ports = cfg.entry("ExposedPorts").or_insert_with(|| json!({}));
                for p in arg.split_whitespace() {
                    let p = if p.contains('/') {
                        p.to_string()
                    } else {
                        format!("{p}/tcp")
                    };
                    ports[p] = json!({});
                }
            }
            "LABEL" => {
                let (k, v) = arg.split_once('=').ok_or_else(bad)?;
                let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
                labels[k] = json!(v.trim_matches('"'));
            }
            _ => return Err(bad()),
        }
    }
    Ok(Value::Object(cfg))
}

/// `["a","b"]` is exec form; anything else is shell form, run by `/bin/sh -c`.
fn exec_form(arg: &str) -> Value {
    match serde_json::from_str::<Vec<String>>(arg) {
        Ok(list) => json!(list),
        Err(_) => json!(["/bin/sh", "-c", arg]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_build_a_config() {
        let cfg = parse_changes(&[
            r#"CMD ["sh"]"#.into(),
            "ENV PATH=/bin".into(),
            "WORKDIR /srv".into(),
            "EXPOSE 80".into(),
        ])
        .unwrap();
        assert_eq!(cfg["Cmd"], json!(["sh"]));
        assert_eq!(cfg["Env"], json!(["PATH=/bin"]));
        assert_eq!(cfg["WorkingDir"], json!("/srv"));
        assert!(cfg["ExposedPorts"]["80/tcp"].is_object());
        assert!(parse_changes(&["FROM x".into()]).is_err());
    }

    #[test]
    fn shell_form_runs_through_sh() {
        assert_eq!(exec_form("echo hi"), json!(["/bin/sh", "-c", "echo hi"]));
    }
}
