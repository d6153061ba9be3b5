//! `commit`: a container's changes as a new image. The writable layer (the overlay's upper
//! directory on the host) is written as a layer tar ([`crate::image::layer_diff`]) into a
//! private file in the store's `tmp/` while the workload is frozen (`--pause`, the
//! default, as Docker's), so the layer is one instant of it; the workload is thawed as
//! soon as the tar is written, before it is compressed and stored
//! ([`crate::image::commit`]). What capsa itself put in the layer (the mount points of the
//! spec's mounts: /proc, /dev, /etc/hosts, volumes...) is not the workload's change and is
//! left out, as Docker keeps those in a layer of its own.
//!
//! A VM container's writable layer is a disk its guest wrote, which the host never parses:
//! its commit is refused by name.

use super::sandbox::{Isolation, Sandbox};
use super::state::{State, Status};
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::commit::CommitOptions;
use crate::image::layer_diff::{write_layer, LayerOptions};
use crate::image::ImageStore;
use std::io::{Seek, Write};
use std::path::PathBuf;

/// What `commit` is asked for.
#[derive(Debug, Default)]
pub struct CommitRequest {
    /// Freeze a running workload while its layer is read.
    pub pause: bool,
    /// The new image's changes, comment, author, name (`created_by` is filled in from the
    /// container's command when empty).
    pub image: CommitOptions,
}

/// Commits container `id` (whose isolation is `sandbox`) as a new image; its ID.
pub fn commit(
    store: &ContainerStore,
    id: &str,
    sandbox: &dyn Sandbox,
    mut request: CommitRequest,
) -> Result<String, ContainerError> {
    let state = store.observe(id)?;
    if state.isolation == Isolation::Vm {
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: "commit of a VM container is not supported yet: its writable layer is a disk its guest wrote, which the host never parses".into(),
        });
    }
    let images = ImageStore::new(store.root());
    let parent = images.resolve(&state.image_id)?;
    let tmp_dir = images.tmp_dir();
    let mut tar = tempfile::tempfile_in(&tmp_dir).map_err(|e| ContainerError::io(&tmp_dir, e))?;
    let entries = {
        let _frozen = match request.pause {
            true => Frozen::freeze(store, &state, sandbox)?,
            false => None,
        };
        capture(store, &state, &mut tar)?
    };
    tar.flush()
        .and_then(|()| tar.rewind())
        .map_err(|e| ContainerError::io(&tmp_dir, e))?;
    if request.image.created_by.is_empty() {
        request.image.created_by = state.command.join(" ");
    }
    let layer = (entries > 0).then_some(tar);
    let image = crate::image::commit::commit(&images, &parent, layer, &request.image)?;
    crate::events::container(store.root(), "commit", &state, &[]);
    Ok(image)
}

/// Writes the container's writable layer as a layer tar into `out`; the number of entries.
fn capture(
    store: &ContainerStore,
    state: &State,
    out: &mut std::fs::File,
) -> Result<u64, ContainerError> {
    let dir = store.dir(&state.id);
    let skipped = super::diff::mount_points(&dir.config())
        .into_iter()
        .filter_map(|p| p.strip_prefix("/").ok().map(PathBuf::from))
        .collect();
    let options = LayerOptions {
        skipped,
        id_shift: state
            .userns_base
            .map(|base| (base, super::userns::USERNS_RANGE)),
    };
    let written =
        write_layer(&dir.upper(), &options, std::io::BufWriter::new(out)).map_err(|source| {
            ContainerError::Commit {
                id: state.id.clone(),
                source,
            }
        })?;
    Ok(written.entries)
}

/// A workload frozen for the capture, thawed when dropped (also when the capture fails).
struct Frozen<'a> {
    store: &'a ContainerStore,
    state: State,
    sandbox: &'a dyn Sandbox,
}

impl<'a> Frozen<'a> {
    /// Freezes `state`'s workload when it runs and is not paused already (a paused one
    /// stays paused afterwards; one that exited meanwhile has a still layer anyway).
    fn freeze(
        store: &'a ContainerStore,
        state: &State,
        sandbox: &'a dyn Sandbox,
    ) -> Result<Option<Frozen<'a>>, ContainerError> {
        if state.status != Status::Running || state.paused || !state.init_alive() {
            return Ok(None);
        }
        match super::pause::set_paused(store, &state.id, true, sandbox) {
            Ok(()) => {
                // Told as Docker's commit tells it: the workload was paused, then unpaused.
                crate::events::container(store.root(), "pause", state, &[]);
                Ok(Some(Frozen {
                    store,
                    state: state.clone(),
                    sandbox,
                }))
            }
            Err(ContainerError::WrongState { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        // A workload that exited meanwhile has nothing to thaw.
        let (store, state) = (self.store, &self.state);
        if super::pause::set_paused(store, &state.id, false, self.sandbox).is_ok() {
            crate::events::container(store.root(), "unpause", state, &[]);
        }
    }
}
