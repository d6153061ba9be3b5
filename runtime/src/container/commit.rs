//! `commit`: a container's changes as a new image. The writable layer (the overlay's upper
//! directory) is written as a layer tar ([`crate::image::layer_diff`]) into a private file
//! in the store's `tmp/` while the workload is frozen (`--pause`, the default, as Docker's),
//! so the layer is one instant of it; the workload is thawed as soon as the tar is written,
//! before it is compressed and stored ([`crate::image::commit`]). What capsa itself put in
//! the layer (the mount points of the spec's mounts: /proc, /dev, /etc/hosts, volumes...)
//! is not the workload's change and is left out, as Docker keeps those in a layer of its
//! own.
//!
//! Each isolation writes its layer ([`Sandbox::write_layer`]): the process tree from the
//! host's upper directory ([`write_host_layer`]), a VM through its guest agent (the host
//! never parses the guest-written disk), as `cp` does.

use super::sandbox::Sandbox;
use super::state::{State, Status};
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::commit::CommitOptions;
use crate::image::layer_diff::{write_layer, LayerOptions};
use crate::image::ImageStore;
use serde_json::Value;
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
    if let Some(name) = &request.image.name {
        crate::image::commit::check_name(name)?;
    }
    let images = ImageStore::new(store.root());
    let parent = images.resolve(&state.image_id)?;
    let tmp_dir = images.tmp_dir();
    let io = |e| ContainerError::io(&tmp_dir, e);
    let mut tar = tempfile::tempfile_in(&tmp_dir).map_err(io)?;
    let skipped = mount_points(store, id);
    {
        let _frozen = match request.pause {
            true => Frozen::freeze(store, &state, sandbox)?,
            false => None,
        };
        let mut out = Recorded::new(std::io::BufWriter::new(&mut tar));
        sandbox.write_layer(store, &state, &skipped, &mut out)?;
        out.finish().map_err(io)?;
    }
    tar.rewind().map_err(io)?;
    if request.image.created_by.is_empty() {
        request.image.created_by = state.command.join(" ");
    }
    // A build step gives the whole config itself; a user's commit starts from the
    // container's own.
    if request.image.container_config.is_none() && request.image.whole_config.is_none() {
        request.image.container_config = own_config(store, &state);
    }
    let layer = holds_entries(&mut tar).map_err(io)?.then_some(tar);
    let image = crate::image::commit::commit(&images, &parent, layer, &request.image)?;
    let comment = request.image.comment.as_deref().unwrap_or_default();
    let attributes = [("comment", comment), ("imageID", image.as_str())];
    crate::events::container(store.root(), "commit", &state, &attributes);
    Ok(image)
}

/// The container's own config as the new image's starts from it (Docker's commit): its
/// Entrypoint and Cmd, Env (without the HOSTNAME capsa sets for it), WorkingDir, User,
/// Labels, StopSignal and Healthcheck. None for a record from before the entrypoint was
/// kept apart from the command: the parent's config is kept then.
fn own_config(store: &ContainerStore, state: &State) -> Option<serde_json::Map<String, Value>> {
    let split = state.asked.entrypoint_len?.min(state.command.len());
    let inspected = super::inspect::inspect(store, &state.id).ok()?;
    let config = &inspected["Config"];
    let (entrypoint, cmd) = state.command.split_at(split);
    let hostname = format!("HOSTNAME={}", state.hostname.as_deref().unwrap_or_default());
    let env: Vec<Value> = config["Env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|v| v.as_str() != Some(&hostname))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut own = serde_json::Map::new();
    own.insert("Entrypoint".into(), non_empty(entrypoint));
    own.insert("Cmd".into(), non_empty(cmd));
    own.insert("Env".into(), Value::Array(env));
    for key in ["WorkingDir", "User", "Labels", "StopSignal", "Healthcheck"] {
        match &config[key] {
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            given => {
                own.insert(key.into(), given.clone());
            }
        }
    }
    Some(own)
}

/// A word list as the image config holds it: null when empty.
fn non_empty(words: &[String]) -> Value {
    match words.is_empty() {
        true => Value::Null,
        false => serde_json::json!(words),
    }
}

/// The spec's mount points, relative to the root.
fn mount_points(store: &ContainerStore, id: &str) -> Vec<String> {
    super::diff::mount_points(&store.dir(id).config())
        .into_iter()
        .filter_map(|p| {
            p.strip_prefix("/")
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect()
}

/// Whether the tar stream in `file` (at its start) holds an entry: an empty layer is two
/// zero blocks, or nothing. Leaves the file at its start.
fn holds_entries(file: &mut std::fs::File) -> std::io::Result<bool> {
    let mut first = [0u8; 512];
    let n = std::io::Read::read(&mut std::io::Read::take(&mut *file, 512), &mut first)?;
    file.rewind()?;
    Ok(n > 0 && first.iter().any(|b| *b != 0))
}

/// The process tree's writable layer: the host's upper directory, walked by descriptor.
pub(crate) fn write_host_layer(
    store: &ContainerStore,
    state: &State,
    skipped: &[String],
    out: &mut dyn Write,
) -> Result<(), ContainerError> {
    let options = LayerOptions {
        skipped: skipped.iter().map(PathBuf::from).collect(),
        id_shift: state
            .userns_base
            .map(|base| (base, super::userns::USERNS_RANGE)),
    };
    write_layer(&store.dir(&state.id).upper(), &options, out)
        .map(|_| ())
        .map_err(|source| ContainerError::Commit {
            id: state.id.clone(),
            source,
        })
}

/// A writer that keeps its first error: a copy that ends quietly when its receiver fails
/// (as `cp`'s relays do) must not leave a short layer taken for a whole one.
struct Recorded<W: Write> {
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: Write> Recorded<W> {
    fn new(inner: W) -> Self {
        Recorded { inner, error: None }
    }

    /// Flushes; the first error any write met.
    fn finish(mut self) -> std::io::Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => self.inner.flush(),
        }
    }
}

impl<W: Write> Write for Recorded<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.inner.write(data).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
