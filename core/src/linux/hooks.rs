//! Running one OCI hook: its own argv and environment only, the container's state on
//! stdin, its output kept for the error, killed at its timeout. The runtime runs the hooks
//! of its namespaces with it (capsa-runc's `prestart`, `createRuntime`, `poststart`,
//! `poststop`), and the container's init those of the container's (`createContainer`
//! before the root is pivoted into, `startContainer` just before the workload's exec).

use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a hook without a timeout may run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a failed hook's output an error keeps.
const OUTPUT_KEPT: usize = 512;

/// Runs `hook` with `state` (the state document as JSON) on its stdin; on failure, why
/// (its exit status and the end of its output, which may hold control characters: the
/// caller escapes it before showing it).
pub fn run(hook: &Hook, state: &[u8]) -> Result<(), String> {
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
    // In memory: the init runs container hooks where no temporary directory may exist or
    // be writable.
    let output: std::fs::File = nix::sys::memfd::memfd_create(
        c"capsa-hook-output",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| format!("memfd_create: {e}"))?
    .into();
    // The state waits in memory too, not in a pipe: a hook that never reads a state
    // larger than a pipe holds could not then block the runtime before its timeout.
    let mut input: std::fs::File = nix::sys::memfd::memfd_create(
        c"capsa-hook-state",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| format!("memfd_create: {e}"))?
    .into();
    input
        .write_all(state)
        .and_then(|()| std::io::Seek::rewind(&mut input))
        .map_err(|e| format!("the hook's state: {e}"))?;
    cmd.stdin(input)
        .stdout(output.try_clone().map_err(|e| e.to_string())?)
        .stderr(output.try_clone().map_err(|e| e.to_string())?);
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
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
    let pidfd = super::sys::pidfd_open(child.id() as i32).map_err(|e| e.to_string())?;
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let start = Instant::now();
    let exited = super::sys::pidfd_wait_exit(&pidfd, ms).map_err(|e| e.to_string())?;
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
    format!(": {}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    #[test]
    fn a_hook_that_never_reads_a_large_state_is_still_held_to_its_timeout() {
        // A state larger than a pipe holds, and a hook that ignores it.
        let hook = HookBuilder::default()
            .path("/bin/sh")
            .args(["sh", "-c", "exec sleep 600"].map(String::from))
            .timeout(1)
            .build()
            .unwrap();
        let state = vec![b' '; 1 << 20];
        let (done, ran) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(run(&hook, &state));
        });
        // Bounded: before, the runtime blocked writing the state, never reaching the timeout.
        let result = ran
            .recv_timeout(Duration::from_secs(60))
            .expect("the runtime was held by a hook that does not read its state");
        let err = result.unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }

    #[test]
    fn a_hook_reads_the_whole_state_on_its_stdin() {
        let hook = HookBuilder::default()
            .path("/bin/sh")
            .args(["sh", "-c", "test \"$(wc -c)\" -eq 100000"].map(String::from))
            .build()
            .unwrap();
        run(&hook, &vec![b'x'; 100_000]).unwrap();
    }
}
