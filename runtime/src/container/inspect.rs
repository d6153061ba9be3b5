//! `inspect`: a container as Docker's `docker inspect` shows it (its field names), built
//! from the recorded state and the OCI spec, plus a small evaluator for `-f` templates.

use super::state::{State, Status};
use super::store::ContainerStore;
use super::ContainerError;
use serde_json::{json, Value};

/// The JSON object `docker inspect` prints for one container.
pub fn inspect(store: &ContainerStore, id: &str) -> Result<Value, ContainerError> {
    let state = store.observe(id)?;
    let spec: Value = std::fs::read(store.dir(id).config())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    Ok(to_docker(&state, &spec))
}

fn to_docker(s: &State, spec: &Value) -> Value {
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
            "Image": s.image,
            "WorkingDir": process["cwd"],
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
        "Mounts": spec["mounts"].as_array().map(|m| m.iter().filter(|m| m["type"] == "bind" && !["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"].contains(&m["destination"].as_str().unwrap_or(""))).map(|m| json!({
            "Type": "bind",
            "Source": m["source"],
            "Destination": m["destination"],
            "RW": !m["options"].as_array().is_some_and(|o| o.iter().any(|x| x == "ro")),
        })).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// Evaluates a Go-template the way `docker inspect -f` is mostly used: literal text with
/// `{{.Path.To.Field}}` and `{{json .Path}}` actions.
pub fn render_template(template: &str, value: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| format!("template {template:?}: unclosed action"))?;
        let action = rest[start + 2..start + end].trim();
        let (as_json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let v = lookup(value, path).ok_or_else(|| {
            format!("template {template:?}: can't evaluate field {path} (expected .Field.Path or json .Field)")
        })?;
        out.push_str(&if as_json {
            serde_json::to_string(v).unwrap_or_default()
        } else {
            plain(v)
        });
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path == "." {
        return Some(value);
    }
    let path = path.strip_prefix('.')?;
    path.split('.')
        .try_fold(value, |v, key| v.as_object()?.get(key))
}

/// Go's default formatting of a value: strings bare, arrays as `[a b]`, maps as `map[...]`.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(plain).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", plain(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_follow_paths() {
        let v = json!({"State": {"Pid": 42, "OOMKilled": true}, "Config": {"Hostname": "web", "Env": ["A=1", "B=2"]}});
        assert_eq!(render_template("{{.State.Pid}}", &v).unwrap(), "42");
        assert_eq!(
            render_template("h={{.Config.Hostname}} oom={{.State.OOMKilled}}", &v).unwrap(),
            "h=web oom=true"
        );
        assert_eq!(render_template("{{.Config.Env}}", &v).unwrap(), "[A=1 B=2]");
        assert_eq!(
            render_template("{{json .Config.Env}}", &v).unwrap(),
            r#"["A=1","B=2"]"#
        );
        assert!(render_template("{{.Nope.X}}", &v).is_err());
        assert!(render_template("{{.State.Pid", &v).is_err());
    }
}
