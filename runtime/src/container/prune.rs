//! `container prune`: removes every container that is not running (created, exited, dead,
//! or with a record that cannot be read and no live init).

use super::state::Status;
use super::store::ContainerStore;
use super::{delete, ContainerError};

/// Removes the stopped containers that `wanted` chooses (`--filter`); returns their IDs
/// and the bytes their writable layers held.
pub fn prune(
    store: &ContainerStore,
    wanted: &dyn Fn(&super::State) -> bool,
) -> Result<(Vec<String>, u64), ContainerError> {
    let mut removed = Vec::new();
    let mut bytes = 0;
    for s in store.list() {
        if matches!(s.status, Status::Running | Status::Creating) || !wanted(&s) {
            continue;
        }
        // An unreadable record is removed, unless the init it still names is alive.
        if s.unreadable.is_some() && s.init_alive() {
            continue;
        }
        let size = crate::fsutil::disk_usage(&store.dir(&s.id).upper());
        // A created container's init only waits at the start gate: not running, so pruned.
        delete::remove(store, &s.id, true)?;
        bytes += size;
        removed.push(s.id);
    }
    Ok((removed, bytes))
}
