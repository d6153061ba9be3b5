//! `rename`: moves a container's name atomically (the new name is taken before the old one
//! is released).

use super::store::ContainerStore;
use super::ContainerError;

/// Renames container `id` to `new_name`.
pub fn rename(store: &ContainerStore, id: &str, new_name: &str) -> Result<(), ContainerError> {
    let _lock = store.lock(id)?;
    let mut state = store.load(id)?;
    if state.name == new_name {
        return Err(ContainerError::InvalidArgument(format!(
            "renaming a container with the same name as its current name ({new_name})"
        )));
    }
    store.reserve_name(new_name, id)?;
    let old = std::mem::replace(&mut state.name, new_name.to_string());
    if let Err(e) = store.save(&state) {
        store.release_name(new_name, id);
        return Err(e);
    }
    store.release_name(&old, id);
    crate::events::container(store.root(), "rename", &state, &[("oldName", &old)]);
    Ok(())
}
