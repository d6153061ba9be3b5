//! `top`: the processes of a running container, as the host's `ps` shows them, restricted to
//! the container's cgroup (as `docker top` does).

use super::state::State;
use super::ContainerError;
use crate::linux::cgroups;

/// Runs `ps ARGS` (Docker's default `-ef`) and keeps the header and the container's rows.
pub fn top(state: &State, ps_args: &[String]) -> Result<Vec<String>, ContainerError> {
    if !state.init_alive() {
        return Err(ContainerError::WrongState {
            id: state.id.clone(),
            reason: "container is not running".into(),
        });
    }
    let pids = cgroups::manager(&state.cgroup).pids();
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| ContainerError::InvalidArgument(format!("ps {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(ContainerError::InvalidArgument(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| {
            ContainerError::InvalidArgument(format!(
                "ps {}: its output has no PID column",
                args.join(" ")
            ))
        })?;
    let mut rows = vec![header.to_string()];
    rows.extend(
        lines
            .filter(|l| {
                l.split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse::<i32>().ok())
                    .is_some_and(|p| pids.contains(&p))
            })
            .map(String::from),
    );
    Ok(rows)
}
