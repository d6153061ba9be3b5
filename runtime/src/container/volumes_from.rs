//! `--volumes-from CONTAINER[:ro|:rw]` (`HostConfig.VolumesFrom`): a new container mounts
//! the volumes and bind mounts of another, at the same places, as Docker's does (the
//! backup pattern: `run --rm --volumes-from db -v $PWD:/backup busybox tar c /data`).
//!
//! What the source mounts is read from its own record and spec, the way `inspect` shows
//! it, so the new container names the same volumes (claimed and counted as in use like any
//! other) and the same host paths. A mount the new container asks for itself at the same
//! place wins. A VM container's volumes are disks its guest owns: neither side of
//! `--volumes-from` may be a VM.

use super::options::{Volume, VolumeSource};
use super::store::ContainerStore;
use super::ContainerError;
use std::path::PathBuf;

/// One `--volumes-from` value: the container and the mode its mounts take.
#[derive(Debug, PartialEq)]
struct From<'a> {
    container: &'a str,
    /// `ro`/`rw` given: every mount takes it; none: each keeps the source's.
    read_only: Option<bool>,
}

fn parse(value: &str) -> Result<From<'_>, ContainerError> {
    let (container, mode) = match value.rsplit_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (value, None),
    };
    let read_only = match mode {
        None => None,
        Some("ro") => Some(true),
        Some("rw") => Some(false),
        Some(other) => {
            return Err(ContainerError::InvalidArgument(format!(
                "--volumes-from {value:?}: unknown mode {other:?} (ro or rw)"
            )))
        }
    };
    if container.is_empty() {
        return Err(ContainerError::InvalidArgument(format!(
            "--volumes-from {value:?}: no container named"
        )));
    }
    Ok(From {
        container,
        read_only,
    })
}

/// The mounts `values` name, for a new container that already asks for `own` (its own
/// mounts win at the same place). `vm`: the new container is a VM (refused).
pub fn mounts(
    store: &ContainerStore,
    values: &[String],
    own: &[Volume],
    vm: bool,
) -> Result<Vec<Volume>, ContainerError> {
    let mut out: Vec<Volume> = Vec::new();
    for value in values {
        let from = parse(value)?;
        if vm {
            return Err(ContainerError::InvalidArgument(format!(
                "--volumes-from {value}: a VM container's volumes are disks of its own; not available with --isolation vm"
            )));
        }
        let id = store.resolve(from.container)?;
        let state = store.load(&id)?;
        if !state.isolation.workload_on_host() {
            return Err(ContainerError::InvalidArgument(format!(
                "--volumes-from {value}: container {} is a VM, whose volumes are disks only its guest mounts",
                state.name
            )));
        }
        let spec: serde_json::Value = std::fs::read(store.dir(&id).config())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let listed = super::inspect::mounts(store, &state, &spec);
        for m in listed.as_array().into_iter().flatten() {
            let Some(volume) = to_volume(m, from.read_only) else {
                continue;
            };
            let taken = |v: &Volume| v.container == volume.container;
            if !own.iter().any(taken) && !out.iter().any(taken) {
                out.push(volume);
            }
        }
    }
    Ok(out)
}

/// One of `inspect`'s `Mounts` as a mount of the new container.
fn to_volume(m: &serde_json::Value, read_only: Option<bool>) -> Option<Volume> {
    let destination = m["Destination"].as_str()?.to_string();
    let mut volume = match m["Type"].as_str()? {
        "volume" => Volume::new(
            VolumeSource::Named(m["Name"].as_str()?.to_string()),
            PathBuf::new(),
            destination,
        ),
        "bind" => Volume::new(
            VolumeSource::Host,
            PathBuf::from(m["Source"].as_str()?),
            destination,
        ),
        _ => return None,
    };
    volume.read_only = read_only.unwrap_or(!m["RW"].as_bool().unwrap_or(true));
    Some(volume)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_with_their_mode() {
        assert_eq!(
            parse("db").unwrap(),
            From {
                container: "db",
                read_only: None
            }
        );
        assert_eq!(parse("db:ro").unwrap().read_only, Some(true));
        assert_eq!(parse("db:rw").unwrap().read_only, Some(false));
        assert!(parse("db:rx")
            .unwrap_err()
            .to_string()
            .contains("unknown mode"));
        assert!(parse(":ro").is_err());
    }

    #[test]
    fn inspect_mounts_become_volumes_and_binds() {
        let v = to_volume(
            &serde_json::json!({"Type": "volume", "Name": "data", "Destination": "/d", "RW": true}),
            None,
        )
        .unwrap();
        assert_eq!(v.source, VolumeSource::Named("data".into()));
        assert!(!v.read_only);
        let b = to_volume(
            &serde_json::json!({"Type": "bind", "Source": "/srv", "Destination": "/s", "RW": false}),
            None,
        )
        .unwrap();
        assert_eq!(
            (b.host.as_path(), b.read_only),
            (std::path::Path::new("/srv"), true)
        );
        let forced = to_volume(
            &serde_json::json!({"Type": "bind", "Source": "/srv", "Destination": "/s", "RW": true}),
            Some(true),
        )
        .unwrap();
        assert!(forced.read_only);
    }
}
