//! `capsa import`: a root file system tarball (plain, gzip or zstd) becomes a one-layer
//! image, as `docker import` makes one. The tarball is read once, streamed through
//! [`super::layer::take_in`].

use super::digest::chain_ids;
use super::layer::take_in;
use super::{ImageError, ImageStore, Reference};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// What `import` made.
#[derive(Debug)]
pub struct Imported {
    /// The new image's ID (config digest).
    pub id: String,
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
    let _gc = store.gc_shared()?;
    store.sweep_staging();
    let staging = store.staging()?;
    let staged = take_in(input, staging.path(), None, source, None)?;
    let (blob_digest, blob_size, diff_id) = (
        staged.blob_digest.clone(),
        staged.blob_size,
        staged.diff_id.clone(),
    );
    let layer_media_type = staged.compression.oci_media_type();
    // A one-layer image: the chain ID is the diff ID.
    let chain = chain_ids(std::slice::from_ref(&diff_id)).remove(0);
    staged.commit(store, &chain)?;

    let now = crate::timefmt::rfc3339(std::time::SystemTime::now());
    let config = json!({
        "created": now,
        "architecture": "amd64",
        "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
        "history": [{"created": now, "created_by": format!("capsa import {source}")}],
    });
    let config_bytes = serde_json::to_vec(&config).expect("JSON values serialise");
    let config_digest = store.put_blob(&config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.as_str(),
            "size": config_bytes.len(),
        },
        "layers": [{"mediaType": layer_media_type, "digest": blob_digest.as_str(), "size": blob_size}],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON values serialise");
    let manifest_digest = store.put_blob(&manifest_bytes)?;
    store.add_image(&manifest_digest, &config_digest, name, None)?;
    let shown = name.map(|n| super::store::familiar_name(&n.full()));
    let attributes: Vec<(&str, &str)> = shown.iter().map(|n| ("name", n.as_str())).collect();
    crate::events::emit(
        store.root(),
        crate::events::Kind::Image,
        "import",
        config_digest.as_str(),
        &attributes,
    );
    Ok(Imported {
        id: config_digest.to_string(),
    })
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

/// Turns `--change` instructions into an image config's `config` object.
fn parse_changes(changes: &[String]) -> Result<Value, ImageError> {
    let mut cfg = Map::new();
    apply_changes(&mut cfg, changes)?;
    Ok(Value::Object(cfg))
}

/// Applies Dockerfile-style `--change` instructions (Docker's set for `import` and
/// `commit`: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR,
/// STOPSIGNAL) to an image config's `config` object; any other is refused, naming it.
pub fn apply_changes(cfg: &mut Map<String, Value>, changes: &[String]) -> Result<(), ImageError> {
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
                if !env.is_array() {
                    *env = json!([]);
                }
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
            "VOLUME" => {
                let paths = match exec_form(arg) {
                    Value::Array(list) if arg.starts_with('[') => list,
                    _ => arg.split_whitespace().map(|p| json!(p)).collect(),
                };
                let volumes = cfg.entry("Volumes").or_insert_with(|| json!({}));
                for p in paths.iter().filter_map(Value::as_str) {
                    volumes[p] = json!({});
                }
            }
            "STOPSIGNAL" => {
                if !is_signal(arg) {
                    return Err(bad());
                }
                cfg.insert("StopSignal".into(), json!(arg));
            }
            "HEALTHCHECK" => {
                let check = crate::container::health::parse_instruction(arg).ok_or_else(bad)?;
                cfg.insert("Healthcheck".into(), json!(check));
            }
            "LABEL" => {
                let (k, v) = arg.split_once('=').ok_or_else(bad)?;
                let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                labels[k] = json!(v.trim_matches('"'));
            }
            "ONBUILD" => {
                let triggers = cfg.entry("OnBuild").or_insert_with(|| json!([]));
                match triggers {
                    Value::Array(list) => list.push(json!(arg)),
                    other => *other = json!([arg]),
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(())
}

/// Whether `arg` names a signal as STOPSIGNAL may: `SIGQUIT`, `QUIT` or `3`.
fn is_signal(arg: &str) -> bool {
    use nix::sys::signal::Signal;
    if let Ok(n) = arg.parse::<i32>() {
        return Signal::try_from(n).is_ok();
    }
    let upper = arg.to_ascii_uppercase();
    let full = match upper.starts_with("SIG") {
        true => upper,
        false => format!("SIG{upper}"),
    };
    full.parse::<Signal>().is_ok()
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
            "STOPSIGNAL SIGQUIT".into(),
        ])
        .unwrap();
        assert_eq!(cfg["StopSignal"], json!("SIGQUIT"));
        assert!(parse_changes(&["STOPSIGNAL SIGNOPE".into()]).is_err());
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
