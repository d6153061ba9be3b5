//! A container's volumes, from `create` to `rm`.
//!
//! At create ([`claim`]): a missing host directory of a `-v` bind is made (Docker's
//! behaviour); named volumes are found or made; anonymous ones are made for `-v /path`,
//! `--mount` without a source and each of the image's `VOLUME`s not mounted otherwise; a
//! new, empty volume gets the image's content at its path (unless `nocopy`); and every
//! mount gets its host side: the volume's `_data` for a container (checked to be a real
//! directory, no symlink on the way), its disk image for a VM. The volumes' lock is held
//! until the container's record names them ([`Claim::keep`]), so no `volume rm` can slip
//! in between.
//!
//! At `rm -v`, or when a `--rm` container is removed, its anonymous volumes go with it.
//! Which containers use which volume is read from their records ([`users`]).

use super::options::{RunOptions, Volume, VolumeSource};
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::Image;
use crate::volume::{populate, Kind, Locked, Users, VolumeError, VolumeStore};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The volumes' lock, held from [`claim`] until the record names the volumes; dropped
/// without [`Claim::keep`] (the create failed), it removes the anonymous volumes it made.
pub struct Claim {
    locked: Option<Locked>,
    made: Vec<String>,
}

impl Claim {
    fn none() -> Claim {
        Claim {
            locked: None,
            made: Vec::new(),
        }
    }

    /// The container's record now names its volumes: they are its own from here.
    pub fn keep(mut self) {
        self.made.clear();
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(locked) = &self.locked {
            for name in &self.made {
                let _ = locked.remove(name, &Users::new());
            }
        }
    }
}

/// The names of the volumes `opts` mounts (after [`claim`] named the anonymous ones).
pub fn names(opts: &RunOptions) -> Vec<String> {
    let mut names: Vec<String> = opts
        .volumes
        .iter()
        .filter_map(|v| v.volume_name().map(String::from))
        .collect();
    names.dedup();
    names
}

/// Prepares the volumes of a container being created (see the module's comment); `vm`
/// says whether it runs in a VM. Returns the options with every mount's host side set.
/// Without volumes (and no image `VOLUME`) nothing is locked and `opts` is returned as is.
pub fn claim<'o>(
    store: &ContainerStore,
    opts: &'o RunOptions,
    image: &Image,
    vm: bool,
) -> Result<(Cow<'o, RunOptions>, Claim), ContainerError> {
    // `--volumes-from`: the other container's mounts join this one's own.
    let widened = match opts.volumes_from.is_empty() {
        true => None,
        false => {
            let found = super::volumes_from::mounts(store, &opts.volumes_from, &opts.volumes, vm)?;
            let mut widened = opts.clone();
            widened.volumes.extend(found);
            Some(widened)
        }
    };
    let current = widened.as_ref().unwrap_or(opts);
    make_missing_host_dirs(current, vm)?;
    let from_image = image_volumes(image, current);
    if from_image.is_empty()
        && current
            .volumes
            .iter()
            .all(|v| v.source == VolumeSource::Host)
    {
        let same = widened.map_or(Cow::Borrowed(opts), Cow::Owned);
        return Ok((same, Claim::none()));
    }
    let mut opts = current.clone();
    for path in from_image {
        opts.volumes
            .push(Volume::new(VolumeSource::Anonymous, PathBuf::new(), path));
    }
    let mut claim = Claim::none();
    let locked = claim.locked.insert(VolumeStore::new(store.root()).lock()?);
    let users = if vm { users(store) } else { Users::new() };
    let scratch = store.root().tmp_dir();
    for v in opts.volumes.iter_mut() {
        let wanted = match &v.source {
            VolumeSource::Host => continue,
            VolumeSource::Named(n) => Some(n.clone()),
            VolumeSource::Anonymous => None,
        };
        if let Some(driver) = &opts.volume_driver {
            // Docker makes a missing volume with the named driver; capsa has only `local`.
            if wanted.as_ref().is_none_or(|n| locked.get(n).is_err()) {
                return Err(ContainerError::InvalidArgument(format!(
                    "error looking up volume plugin {driver}: plugin \"{driver}\" not found (capsa's volumes are local)"
                )));
            }
        }
        let (mut volume, made) = locked.create(wanted.as_deref(), &BTreeMap::new())?;
        let name = volume.record.name.clone();
        if made && wanted.is_none() {
            claim.made.push(name.clone());
        }
        v.source = VolumeSource::Named(name.clone());
        if volume.record.kind == Kind::Directory {
            volume.check_data_dir()?;
            if !v.no_copy {
                populate::from_image(&image.layer_dirs, &v.container, &volume, &scratch)?;
            }
        }
        v.host = if vm {
            if volume.record.kind == Kind::Directory {
                refuse_shared(&name, &users)?;
                locked.make_disk(&mut volume)?;
            }
            volume.disk_path()
        } else {
            check_directory(&volume)?;
            volume.data_dir()
        };
    }
    Ok((Cow::Owned(opts), claim))
}

/// Docker makes a `-v` bind's missing host directory (not a `--mount` bind's: those are
/// checked to exist when parsed). A VM's binds are copied into disks: each must be a
/// directory, made when missing.
fn make_missing_host_dirs(opts: &RunOptions, vm: bool) -> Result<(), ContainerError> {
    for v in opts
        .volumes
        .iter()
        .filter(|v| v.source == VolumeSource::Host)
    {
        if vm || !v.host.exists() {
            std::fs::create_dir_all(&v.host).map_err(|e| {
                ContainerError::InvalidArgument(format!("-v {}: {e}", v.host.display()))
            })?;
        }
    }
    Ok(())
}

/// The image's `VOLUME` paths that no `-v`, `--mount` or `--tmpfs` covers.
fn image_volumes(image: &Image, opts: &RunOptions) -> Vec<String> {
    let declared = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.volumes().clone())
        .unwrap_or_default();
    let clean = |p: &str| Path::new(p).components().collect::<PathBuf>();
    let mounted: Vec<PathBuf> = opts
        .volumes
        .iter()
        .map(|v| clean(&v.container))
        .chain(opts.tmpfs.iter().map(|(p, _)| clean(p)))
        .collect();
    let mut paths: Vec<String> = Vec::new();
    for path in declared {
        let p = clean(&path);
        if p.is_absolute() && p != Path::new("/") && !mounted.contains(&p) {
            let text = p.display().to_string();
            if !paths.contains(&text) {
                paths.push(text);
            }
        }
    }
    paths
}

/// A container binds a directory volume only: a VM's disk holds a file system a guest
/// wrote, which the host never mounts.
fn check_directory(volume: &crate::volume::Volume) -> Result<(), ContainerError> {
    if volume.record.kind == Kind::Disk {
        return Err(VolumeError::Unusable {
            name: volume.record.name.clone(),
            reason: "it is a VM's disk (a file system a guest wrote, which the host never mounts); use it with --isolation vm, or use another volume".into(),
        }
        .into());
    }
    volume.check_data_dir().map_err(Into::into)
}

/// A directory volume that containers use cannot become a VM's disk: the two would never
/// see each other's writes.
fn refuse_shared(name: &str, users: &Users) -> Result<(), ContainerError> {
    match users.get(name).filter(|u| !u.is_empty()) {
        Some(holders) => Err(VolumeError::Unusable {
            name: name.to_string(),
            reason: format!(
                "containers use it as a directory ({}); a VM can only use a volume as its own disk, never shared live with containers: remove them first, or use another volume",
                holders.join(", ")
            ),
        }
        .into()),
        None => Ok(()),
    }
}

/// Which containers use which volume, from every container's record.
pub fn users(store: &ContainerStore) -> Users {
    let mut map = Users::new();
    for state in store.list() {
        for name in &state.volumes {
            map.entry(name.clone())
                .or_default()
                .push(format!("{} ({})", state.id, state.name));
        }
    }
    map
}

/// Checks again, before a stopped container starts anew, that each of its volumes is
/// still a real directory (see [`crate::volume::Volume::check_data_dir`]).
pub fn check_again(store: &ContainerStore, volumes: &[String]) -> Result<(), ContainerError> {
    let vstore = VolumeStore::new(store.root());
    for name in volumes {
        check_directory(&vstore.get(name)?)?;
    }
    Ok(())
}

/// Removes the anonymous ones among `volumes` that no container uses any more (after their
/// container was removed: `rm -v`, `--rm`). Named volumes stay, as with Docker.
pub fn remove_anonymous(store: &ContainerStore, volumes: &[String]) -> Result<(), ContainerError> {
    if volumes.is_empty() {
        return Ok(());
    }
    let vstore = VolumeStore::new(store.root());
    let locked = vstore.lock()?;
    let users = users(store);
    for name in volumes {
        match locked.get(name) {
            Ok(v) if v.record.anonymous => match locked.remove(name, &users) {
                Ok(()) | Err(VolumeError::InUse { .. }) | Err(VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            },
            _ => {}
        }
    }
    Ok(())
}
