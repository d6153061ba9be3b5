//! `inspect`: a container as Docker's `docker inspect` shows it (its field names), built
//! from the recorded state and the OCI spec (`-f` templates run over it: crate::template).

use super::state::{State, Status};
use super::store::ContainerStore;
use super::ContainerError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The JSON object `docker inspect` prints for one container.
pub fn inspect(store: &ContainerStore, id: &str) -> Result<Value, ContainerError> {
    let state = store.observe(id)?;
    let spec: Value = std::fs::read(store.dir(id).config())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    Ok(to_docker(&state, &spec, &labels(store, &state)))
}

fn to_docker(s: &State, spec: &Value, labels: &BTreeMap<String, String>) -> Value {
    let process = &spec["process"];
    let resources = &spec["linux"]["resources"];
    let running = s.status == Status::Running;
    json!({
        "Id": s.id,
        "Created": s.created,
        "Path": s.command.first().cloned().unwrap_or_default(),
        "Args": s.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": s.status_word(),
            "Running": running,
            "Paused": s.paused,
            "Restarting": s.restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": if running { s.pid.unwrap_or(0) } else { 0 },
            "ExitCode": s.exit_code.unwrap_or(0),
            "Error": s.error.clone().unwrap_or_default(),
            "StartedAt": s.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": s.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        },
        "Image": s.image_id,
        "Name": format!("/{}", s.name),
        "RestartCount": s.restart_count,
        "Isolation": s.isolation,
        "Config": {
            "Hostname": spec["hostname"],
            "User": spec["annotations"][crate::linux::process::init::USER_ANNOTATION],
            "Env": process["env"],
            "Cmd": s.command,
            "Tty": process["terminal"].as_bool().unwrap_or(false),
            "OpenStdin": s.open_stdin,
            "StdinOnce": s.stdin_once,
            "AttachStdin": s.open_stdin,
            "Image": s.image,
            "WorkingDir": process["cwd"],
            "Labels": labels,
            "StopSignal": s.stop_signal.and_then(|n| nix::sys::signal::Signal::try_from(n).ok()).map(|sig| sig.as_str()),
        },
        "HostConfig": {
            "NetworkMode": super::network::network_name(s),
            "Memory": resources["memory"]["limit"].as_i64().unwrap_or(0),
            "NanoCpus": resources["cpu"]["quota"].as_i64().map_or(0, |q| q * 10_000),
            "PidsLimit": resources["pids"]["limit"],
            "ReadonlyRootfs": spec["root"]["readonly"].as_bool().unwrap_or(false),
            "AutoRemove": s.auto_remove,
            "RestartPolicy": {
                "Name": s.restart_policy.name(),
                "MaximumRetryCount": match s.restart_policy {
                    super::restart::RestartPolicy::OnFailure { max } => max,
                    _ => 0,
                },
            },
            "CgroupParent": s.cgroup.dirs.values().next().and_then(|d| d.parent()).map(|p| p.display().to_string()),
            "CapAdd": Value::Null,
            "Privileged": spec["linux"]["seccomp"].is_null() && spec["linux"]["maskedPaths"].is_null(),
        },
        "NetworkSettings": super::network::inspect_settings(s),
        "Mounts": mounts(spec),
    })
}

/// Container `s`'s labels: its image's (none when the image is gone), with its own
/// (`--label`) over them, as Docker merges them.
pub fn labels(store: &ContainerStore, s: &State) -> BTreeMap<String, String> {
    labels_over(image_labels(store, &s.image_id), s)
}

/// The labels of image `image_id` (none when it is gone).
pub fn image_labels(store: &ContainerStore, image_id: &str) -> BTreeMap<String, String> {
    crate::image::ImageStore::new(store.root())
        .resolve(image_id)
        .ok()
        .and_then(|image| image.config.config().as_ref()?.labels().clone())
        .map(|l| l.into_iter().collect())
        .unwrap_or_default()
}

/// The container's own labels over its image's `image`.
pub fn labels_over(mut image: BTreeMap<String, String>, s: &State) -> BTreeMap<String, String> {
    image.extend(s.labels.clone());
    image
}

/// Docker's `Mounts` of a container whose OCI spec is `spec`: the mounts the user asked
/// for (`inspect` and the Engine API's container list show them).
pub fn mounts(spec: &Value) -> Value {
    spec["mounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| is_users_mount(m))
                .map(|m| {
                    json!({
                        "Type": "bind",
                        "Source": m["source"],
                        "Destination": m["destination"],
                        "RW": !m["options"].as_array().is_some_and(|o| o.iter().any(|x| x == "ro")),
                    })
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into()
}

/// Whether a spec mount is one the user asked for (`-v`, `--mount`, a volume), as Docker's
/// `Mounts` lists them: not the /etc files capsa writes, nor the container's own cgroup
/// shown at /sys/fs/cgroup.
fn is_users_mount(m: &Value) -> bool {
    let destination = m["destination"].as_str().unwrap_or("");
    m["type"] == "bind"
        && !["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"].contains(&destination)
        && !Path::new(destination).starts_with("/sys/fs/cgroup")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_templates_see_docker_names() {
        let s: State = serde_json::from_value(json!({
            "id": "abc", "name": "web", "image": "busybox", "image_id": "sha256:1",
            "command": ["sh", "-c", "true"], "isolation": "container", "status": "exited",
            "created": "2024-01-01T00:00:00Z", "exit_code": 3, "cgroup": {"version": 2, "dirs": {}},
        }))
        .unwrap();
        let labels = BTreeMap::from([("team".to_string(), "db".to_string())]);
        let v = to_docker(&s, &Value::Null, &labels);
        let t = |text: &str| {
            crate::template::Template::parse(text)
                .unwrap()
                .render(&v, &crate::template::format::INSPECT)
                .unwrap()
        };
        assert_eq!(
            t("{{.State.ExitCode}} {{.Name}} {{json .Args}}"),
            r#"3 /web ["-c","true"]"#
        );
        assert_eq!(
            t(r#"{{index .Config.Labels "team"}}|{{index .Config.Labels "x"}}"#),
            "db|"
        );
    }
}
