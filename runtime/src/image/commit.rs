//! A new image from a parent image and one layer tar (a container's writable layer for
//! `commit`; a build step's later): the layer gzip-compressed and taken in through
//! [`super::layer::take_in`] like a pulled one (content-addressed, shared), the parent's
//! config with Dockerfile-style changes and a history entry as Docker writes it, and a
//! manifest of the parent's kind (Docker v2 or OCI), so a push sends what the parent was.

use super::digest::{chain_ids, diff_ids_of, Digest};
use super::layer::{take_in, Compression};
use super::{Image, ImageError, ImageStore, Reference};
use serde_json::{json, Map, Value};
use std::io::{BufReader, Read};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The container config fields a commit's `config` may set (the API's body), as Docker's
/// merge takes them.
const CONFIG_FIELDS: [&str; 11] = [
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "WorkingDir",
    "User",
    "StopSignal",
    "OnBuild",
    "Healthcheck",
];

/// What the new image is made of, besides its parent and layer.
#[derive(Debug, Default)]
pub struct CommitOptions {
    /// Dockerfile-style changes (`CMD ["sh"]`, `ENV K=V`...).
    pub changes: Vec<String>,
    /// Container config fields to set first (the API's request body), Docker's names.
    pub config: Option<Map<String, Value>>,
    /// The whole container config, in place of the parent's (a build step's).
    pub whole_config: Option<Map<String, Value>>,
    /// The committed container's own config fields (Cmd, Entrypoint, Env, WorkingDir,
    /// User, Labels...), each replacing the parent's before `config` and `changes`, as
    /// Docker's commit starts from the container's config.
    pub container_config: Option<Map<String, Value>>,
    /// The history entry's `created_by`: the container's command.
    pub created_by: String,
    /// `-m`: the history entry's and the image's comment.
    pub comment: Option<String>,
    /// `-a`: the image's author.
    pub author: Option<String>,
    /// The name to give it.
    pub name: Option<Reference>,
}

/// Refuses a name that carries a digest (a digest names content; the new image's is not
/// that one), as `tag` does.
pub fn check_name(name: &Reference) -> Result<(), ImageError> {
    match name.digest {
        Some(_) => Err(ImageError::InvalidReference {
            reference: name.full(),
            reason: "a tag cannot carry a digest",
        }),
        None => Ok(()),
    }
}

/// Makes the image: `parent`, then the layer read from `layer` (a plain tar; `None`: no
/// layer, an empty step in the history as Docker records an empty diff). Returns the new
/// image's ID (`sha256:` + the config digest).
pub fn commit(
    store: &ImageStore,
    parent: &Image,
    layer: Option<impl Read>,
    options: &CommitOptions,
) -> Result<String, ImageError> {
    if let Some(name) = &options.name {
        check_name(name)?;
    }
    let edit = |doc: &mut Value, diff_id: Option<&Digest>, now: &str| {
        new_config(doc, options, diff_id, now)
    };
    commit_with(store, parent, layer, options.name.as_ref(), edit)
}

/// A build step's image: `parent`, then `layer` (if any), with `config` as the image's
/// container config (replaced whole) and a history entry saying `created_by`.
pub fn commit_step(
    store: &ImageStore,
    parent: &Image,
    layer: Option<impl Read>,
    config: &Map<String, Value>,
    created_by: &str,
) -> Result<String, ImageError> {
    let edit = |doc: &mut Value, diff_id: Option<&Digest>, now: &str| {
        new_config(doc, &CommitOptions::default(), diff_id, now)?;
        doc["config"] = Value::Object(config.clone());
        let last = doc["history"].as_array_mut().and_then(|h| h.last_mut());
        if let Some(step) = last {
            step["created_by"] = json!(created_by);
        }
        Ok(())
    };
    commit_with(store, parent, layer, None, edit)
}

/// [`commit`] with `edit` turning the parent's config document into the new image's
/// (given the new layer's diff ID and the time).
fn commit_with(
    store: &ImageStore,
    parent: &Image,
    layer: Option<impl Read>,
    name: Option<&Reference>,
    edit: impl FnOnce(&mut Value, Option<&Digest>, &str) -> Result<(), ImageError>,
) -> Result<String, ImageError> {
    let corrupt = |what, e: &dyn std::fmt::Display| ImageError::Corrupt {
        image: parent.id.clone(),
        what,
        reason: e.to_string(),
    };
    let config_digest = Digest::parse(&parent.id).map_err(|e| corrupt("image ID", &e))?;
    let mut config: Value = serde_json::from_slice(&store.read_blob(&config_digest)?)
        .map_err(|e| corrupt("config", &e))?;
    let manifest_digest =
        Digest::parse(&parent.manifest_digest).map_err(|e| corrupt("manifest", &e))?;
    let mut manifest: Value = serde_json::from_slice(&store.read_blob(&manifest_digest)?)
        .map_err(|e| corrupt("manifest", &e))?;
    let mut diff_ids = diff_ids_of(&parent.config).map_err(|e| corrupt("config", &e))?;

    let _gc = store.gc_shared()?;
    store.sweep_staging();
    let staging = store.staging()?;
    let docker_kind = manifest["mediaType"] == DOCKER_MANIFEST;
    let new_layer = match layer {
        None => None,
        Some(tar) => {
            let gzipped = flate2::read::GzEncoder::new(
                BufReader::with_capacity(256 * 1024, tar),
                flate2::Compression::fast(),
            );
            let staged = take_in(
                gzipped,
                staging.path(),
                Some(Compression::Gzip),
                "commit",
                None,
            )?;
            diff_ids.push(staged.diff_id.clone());
            let chain = chain_ids(&diff_ids).pop().expect("one diff ID at least");
            let _lock = store.layer_lock(&chain)?;
            let media_type = if docker_kind {
                DOCKER_LAYER
            } else {
                Compression::Gzip.oci_media_type()
            };
            let descriptor = json!({
                "mediaType": media_type,
                "digest": staged.blob_digest.as_str(),
                "size": staged.blob_size,
            });
            let diff_id = staged.diff_id.clone();
            staged.commit(store, &chain)?;
            Some((descriptor, diff_id))
        }
    };

    let now = crate::timefmt::rfc3339(std::time::SystemTime::now());
    edit(&mut config, new_layer.as_ref().map(|(_, d)| d), &now)?;
    let config_bytes = serde_json::to_vec(&config).expect("JSON values serialise");
    let config_id = store.put_blob(&config_bytes)?;

    manifest["config"] = json!({
        "mediaType": if docker_kind { DOCKER_CONFIG } else { OCI_CONFIG },
        "digest": config_id.as_str(),
        "size": config_bytes.len(),
    });
    if !docker_kind {
        manifest["mediaType"] = json!(OCI_MANIFEST);
    }
    if let Some((descriptor, _)) = new_layer {
        match manifest.get_mut("layers") {
            Some(Value::Array(layers)) => layers.push(descriptor),
            _ => return Err(corrupt("manifest", &"no layers list")),
        }
    }
    // What the parent's manifest said of itself (annotations of its build) is not this
    // image's.
    if let Some(m) = manifest.as_object_mut() {
        m.remove("annotations");
        m.remove("subject");
    }
    let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON values serialise");
    let manifest_id = store.put_blob(&manifest_bytes)?;
    store.add_image(&manifest_id, &config_id, name, None)?;
    store.set_parent(&manifest_id, &parent.id)?;
    Ok(config_id.to_string())
}

/// Turns the parent's config document into the new image's: `config` with the options'
/// fields and changes, the new diff ID, a history entry, the time, author and comment.
fn new_config(
    doc: &mut Value,
    options: &CommitOptions,
    diff_id: Option<&Digest>,
    now: &str,
) -> Result<(), ImageError> {
    let Some(doc) = doc.as_object_mut() else {
        return Err(ImageError::Corrupt {
            image: "parent".into(),
            what: "config",
            reason: "not a JSON object".into(),
        });
    };
    let mut cfg = match (doc.remove("config"), &options.whole_config) {
        (_, Some(whole)) => whole.clone(),
        (Some(Value::Object(m)), None) => m,
        _ => Map::new(),
    };
    if let Some(own) = &options.container_config {
        cfg.extend(own.clone());
    }
    if let Some(body) = &options.config {
        merge_config(&mut cfg, body);
    }
    super::import::apply_changes(&mut cfg, &options.changes)?;
    doc.insert("config".into(), Value::Object(cfg));
    // Docker's deprecated copies of the building container's config are the parent's.
    doc.remove("container_config");
    doc.remove("container");
    doc.insert("created".into(), json!(now));
    match &options.author {
        Some(a) => doc.insert("author".into(), json!(a)),
        None => doc.remove("author"),
    };
    match &options.comment {
        Some(c) => doc.insert("comment".into(), json!(c)),
        None => doc.remove("comment"),
    };
    if let Some(d) = diff_id {
        let rootfs = doc
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
        match rootfs.get_mut("diff_ids") {
            Some(Value::Array(ids)) => ids.push(json!(d.as_str())),
            _ => rootfs["diff_ids"] = json!([d.as_str()]),
        }
    }
    let mut step = Map::new();
    step.insert("created".into(), json!(now));
    step.insert("created_by".into(), json!(options.created_by));
    if let Some(a) = &options.author {
        step.insert("author".into(), json!(a));
    }
    if let Some(c) = &options.comment {
        step.insert("comment".into(), json!(c));
    }
    if diff_id.is_none() {
        step.insert("empty_layer".into(), json!(true));
    }
    match doc.get_mut("history") {
        Some(Value::Array(h)) => h.push(Value::Object(step)),
        _ => {
            doc.insert("history".into(), json!([step]));
        }
    }
    Ok(())
}

/// Sets the fields of `body` (a container config) that it gives in `cfg`, as Docker's
/// merge does: `Env` by variable, `ExposedPorts`, `Volumes` and `Labels` by key, the rest
/// replaced when given.
fn merge_config(cfg: &mut Map<String, Value>, body: &Map<String, Value>) {
    for key in CONFIG_FIELDS {
        let Some(given) = body.get(key) else { continue };
        let empty = match given {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if empty {
            continue;
        }
        match (key, given, cfg.get_mut(key)) {
            ("Env", Value::Array(new), Some(Value::Array(old))) => {
                for var in new {
                    let name = var.as_str().and_then(|v| v.split('=').next()).unwrap_or("");
                    old.retain(|o| o.as_str().and_then(|v| v.split('=').next()) != Some(name));
                    old.push(var.clone());
                }
            }
            (
                "ExposedPorts" | "Volumes" | "Labels",
                Value::Object(new),
                Some(Value::Object(old)),
            ) => {
                old.extend(new.clone());
            }
            _ => {
                cfg.insert(key.to_string(), given.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_history_and_the_new_layer_go_into_the_config() {
        let mut doc = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin", "A=1"], "Labels": {"x": "1"}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created_by": "base"}],
            "container_config": {"Cmd": ["old"]},
        });
        let options = CommitOptions {
            changes: vec![r#"CMD ["run"]"#.into(), "ENV B=2".into()],
            config: Some(
                json!({"Env": ["A=3"], "Labels": {"y": "2"}, "Hostname": "h"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            whole_config: None,
            container_config: None,
            created_by: "sh -c touch x".into(),
            comment: Some("why".into()),
            author: Some("me".into()),
            name: None,
        };
        let diff = Digest::of(b"layer");
        new_config(&mut doc, &options, Some(&diff), "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(doc["config"]["Cmd"], json!(["run"]));
        assert_eq!(doc["config"]["Env"], json!(["PATH=/bin", "A=3", "B=2"]));
        assert_eq!(doc["config"]["Labels"], json!({"x": "1", "y": "2"}));
        assert!(doc["config"].get("Hostname").is_none());
        assert_eq!(doc["rootfs"]["diff_ids"][1], json!(diff.as_str()));
        assert_eq!(doc["history"][1]["created_by"], json!("sh -c touch x"));
        assert_eq!(doc["history"][1]["comment"], json!("why"));
        assert_eq!(doc["author"], json!("me"));
        assert!(doc.get("container_config").is_none());
        let mut empty = json!({"config": null, "history": []});
        new_config(&mut empty, &CommitOptions::default(), None, "t").unwrap();
        assert_eq!(empty["history"][0]["empty_layer"], json!(true));
        assert!(empty.get("rootfs").is_none());
        let refused = CommitOptions {
            changes: vec!["FROM busybox".into()],
            ..CommitOptions::default()
        };
        let err = new_config(&mut json!({}), &refused, None, "t").unwrap_err();
        assert!(err.to_string().contains("FROM busybox"), "{err}");
    }
}
