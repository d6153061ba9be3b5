//! OCI hooks that run in the runtime's namespaces: `prestart` and `createRuntime` once the
//! init exists (its namespaces are there, it has not started), `poststart` after `start`,
//! `poststop` at `delete`. Each gets the container's state on stdin and its own argv and
//! environment only, and is killed at its timeout. `createContainer` and `startContainer`
//! (which run inside the container) are refused by name in [`super::bundle`].

use super::state::StateDocument;
use super::RuntimeError;
use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a hook without a timeout may run.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a failed hook's output an error keeps.
const OUTPUT_KEPT: usize = 512;

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
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for pair in hook.env().iter().flatten() {
        if let Some((k, v)) = pair.split_once('=') {
            cmd.env(k, v);
        }
    }
    let output = tempfile::tempfile().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::piped())
        .stdout(output.try_clone().map_err(|e| e.to_string())?)
        .stderr(output.try_clone().map_err(|e| e.to_string())?);
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state closes the pipe: not an error.
        let _ = stdin.write_all(input);
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64))
        .unwrap_or(DEFAULT_TIMEOUT);
    let status = wait_bounded(&mut child, timeout)?;
    if status.success() {
        return Ok(());
    }
    Err(format!("{status}{}", tail_of(output)))
}

/// Waits for `child` until `timeout`, then kills it.
fn wait_bounded(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus, String> {
    let pidfd = crate::linux::sys::pidfd_open(child.id() as i32).map_err(|e| e.to_string())?;
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let start = Instant::now();
    let exited = crate::linux::sys::pidfd_wait_exit(&pidfd, ms).map_err(|e| e.to_string())?;
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("timed out after {:?}", start.elapsed()));
    }
    child.wait().map_err(|e| e.to_string())
}

/// The end of what a failed hook wrote, as `: <text>` (empty when it wrote nothing).
fn tail_of(mut file: std::fs::File) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.take(64 * 1024).read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text.len().saturating_sub(OUTPUT_KEPT);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!(": {}", crate::printable::escape_controls(&text[start..]))
}
