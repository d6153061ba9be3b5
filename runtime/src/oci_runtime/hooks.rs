//! OCI hooks that run in the runtime's namespaces: `prestart` and `createRuntime` once the
//! init exists (its namespaces are there, it has not started), `poststart` after `start`,
//! `poststop` at `delete`. Each gets the container's state on stdin and its own argv and
//! environment only, and is killed at its timeout ([`crate::linux::hooks`]).
//! `createContainer` and `startContainer` run inside the container, from its init.

use super::state::StateDocument;
use super::RuntimeError;
use oci_spec::runtime::Hook;

/// Runs `hooks` in order; the first failure stops the rest and is returned.
pub fn run_all(kind: &str, hooks: &[Hook], state: &StateDocument) -> Result<(), RuntimeError> {
    let input = serde_json::to_vec(state).map_err(|e| RuntimeError::Setup(e.to_string()))?;
    for hook in hooks {
        run_one(hook, &input).map_err(|why| {
            RuntimeError::Setup(format!("{kind} hook {}: {why}", hook.path().display()))
        })?;
    }
    Ok(())
}

/// Runs `hooks` in order, every one whatever the others did; the failures as warnings.
pub fn run_all_warning(kind: &str, hooks: &[Hook], state: &StateDocument) -> Vec<String> {
    let Ok(input) = serde_json::to_vec(state) else {
        return vec![format!("{kind} hooks: the state does not serialize")];
    };
    hooks
        .iter()
        .filter_map(|hook| {
            run_one(hook, &input)
                .err()
                .map(|why| format!("{kind} hook {}: {why}", hook.path().display()))
        })
        .collect()
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<(), String> {
    crate::linux::hooks::run(hook, input)
        .map_err(|why| crate::printable::escape_controls(&why).into_owned())
}
