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
    let mut value = to_docker(&state, &spec, &labels(store, &state));
    value["Mounts"] = mounts(store, &state, &spec);
    value["HostConfig"]["Binds"] = binds(&value["Mounts"]);
    files(store, &state, &mut value);
    fill_network_ids(store, &mut value["NetworkSettings"]["Networks"]);
    Ok(value)
}

/// The host-side files and the storage driver's folders of container `s`, where dockerd
/// shows its own (`LogPath` is the json-file log that `logs` reads).
fn files(store: &ContainerStore, s: &State, value: &mut Value) {
    let dir = store.dir(&s.id);
    let shown = |p: std::path::PathBuf| p.display().to_string();
    value["LogPath"] = shown(dir.log()).into();
    value["ResolvConfPath"] = shown(dir.etc_file("resolv.conf")).into();
    value["HostnamePath"] = shown(dir.etc_file("hostname")).into();
    value["HostsPath"] = shown(dir.etc_file("hosts")).into();
    value["Driver"] = "overlayfs".into();
    value["Platform"] = "linux".into();
    value["MountLabel"] = "".into();
    value["ProcessLabel"] = "".into();
    value["AppArmorProfile"] = "".into();
    let data = match s.isolation.workload_on_host() {
        true => json!({
            "UpperDir": shown(dir.upper()),
            "WorkDir": shown(dir.work()),
            "MergedDir": shown(dir.rootfs()),
        }),
        // A VM's writable layer is a disk only its guest mounts.
        false => Value::Null,
    };
    value["GraphDriver"] = json!({ "Name": "overlayfs", "Data": data });
}

/// `HostConfig.Binds` as `-v` writes them (`SOURCE:DEST[:ro]`, a volume by its name), from
/// the container's `Mounts`; null when it has none.
fn binds(mounts: &Value) -> Value {
    let listed: Vec<String> = mounts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let source = match m["Type"].as_str()? {
                "volume" => m["Name"].as_str()?,
                _ => m["Source"].as_str()?,
            };
            let ro = if m["RW"].as_bool() == Some(false) {
                ":ro"
            } else {
                ""
            };
            Some(format!("{source}:{}{ro}", m["Destination"].as_str()?))
        })
        .collect();
    if listed.is_empty() {
        Value::Null
    } else {
        listed.into()
    }
}

/// Each `NetworkSettings.Networks` entry's `NetworkID`, from the network store (a network
/// removed since keeps an empty one).
pub fn fill_network_ids(store: &ContainerStore, networks: &mut Value) {
    let nets = crate::net::networks::NetworkStore::new(store.root().dir());
    if let Some(map) = networks.as_object_mut() {
        for (name, entry) in map.iter_mut() {
            if crate::net::networks::BUILT_IN.contains(&name.as_str()) {
                entry["NetworkID"] = super::network::builtin_id(name).into();
            } else if let Ok(record) = nets.get(name) {
                entry["NetworkID"] = record.id.into();
            }
        }
    }
}

fn to_docker(s: &State, spec: &Value, labels: &BTreeMap<String, String>) -> Value {
    let process = &spec["process"];
    let running = s.status == Status::Running;
    let mut v = json!({
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
            "Domainname": "",
            "User": spec["annotations"][crate::linux::process::init::USER_ANNOTATION],
            "AttachStdout": false,
            "AttachStderr": false,
            "Entrypoint": Value::Null,
            "Volumes": Value::Null,
            "Env": env(process, s),
            "Cmd": s.command,
            "Tty": process["terminal"].as_bool().unwrap_or(false),
            "OpenStdin": s.open_stdin,
            "StdinOnce": s.stdin_once,
            "AttachStdin": s.open_stdin,
            "Image": s.image,
            "WorkingDir": process["cwd"],
            "Labels": labels,
            "StopTimeout": s.stop_timeout,
            "StopSignal": s.stop_signal.and_then(|n| nix::sys::signal::Signal::try_from(n).ok()).map(|sig| sig.as_str()),
        },
        "HostConfig": host_config(s, spec),
        "NetworkSettings": super::network::inspect_settings(s),
        "Mounts": Value::Null,
    });
    // Docker shows both only for a container that has a check.
    if let Some(check) = &s.healthcheck {
        v["Config"]["Healthcheck"] = json!(check);
    }
    if let Some(health) = &s.health {
        v["State"]["Health"] = json!(health);
    }
    v
}

/// `Config.Env`: the process's environment, then the names given without a value (shown
/// as given, never set).
fn env(process: &Value, s: &State) -> Value {
    let mut env: Vec<Value> = process["env"].as_array().cloned().unwrap_or_default();
    env.extend(s.asked.env_names.iter().map(|n| Value::from(n.as_str())));
    env.into()
}

/// Docker's `HostConfig`, every key it has: what capsa applies from the spec and the
/// record, Docker's zero values for what capsa never sets.
fn host_config(s: &State, spec: &Value) -> Value {
    let resources = &spec["linux"]["resources"];
    let namespaces = spec["linux"]["namespaces"].as_array();
    let has_ns = |t: &str| namespaces.is_some_and(|n| n.iter().any(|x| x["type"] == t));
    let private_or_host = |t: &str| if has_ns(t) { "private" } else { "host" };
    let vm = s.isolation == super::sandbox::Isolation::Vm;
    let tmpfs: BTreeMap<&str, &str> = s
        .asked
        .tmpfs
        .iter()
        .map(|(p, o)| (p.as_str(), o.as_str()))
        .collect();
    let mut log_config = s.asked.log_config.clone();
    let from_flags = s.log_driver == super::logfile::Driver::JsonFile;
    if let (true, true, Some(size)) = (from_flags, log_config.is_empty(), s.log_rotation.max_size) {
        // A record from before the options were kept: what they came to.
        log_config.insert("max-size".into(), size.to_string());
        log_config.insert("max-file".into(), s.log_rotation.max_file.to_string());
    }
    let mut v = json!({
        "NetworkMode": super::network::network_name(s),
        "Memory": resources["memory"]["limit"].as_i64().unwrap_or(0),
        "MemoryReservation": resources["memory"]["reservation"].as_i64().unwrap_or(0),
        "MemorySwap": resources["memory"]["swap"].as_i64().unwrap_or(0),
        "MemorySwappiness": resources["memory"]["swappiness"].as_i64(),
        "NanoCpus": resources["cpu"]["quota"].as_i64().map_or(0, |q| q * 10_000),
        "CpuShares": resources["cpu"]["shares"].as_u64().unwrap_or(0),
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": resources["cpu"]["cpus"].as_str().unwrap_or(""),
        "CpusetMems": resources["cpu"]["mems"].as_str().unwrap_or(""),
        "PidsLimit": resources["pids"]["limit"],
        "BlkioWeight": resources["blockIO"]["weight"].as_u64().unwrap_or(0),
        "BlkioWeightDevice": [],
        "BlkioDeviceReadBps": [],
        "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [],
        "BlkioDeviceWriteIOps": [],
        "OomKillDisable": resources["memory"]["disableOOMKiller"].as_bool().unwrap_or(false),
        "Ulimits": ulimits(s),
        "Devices": s.asked.devices.iter().map(|d| json!({
            "PathOnHost": d.host,
            "PathInContainer": d.container,
            "CgroupPermissions": d.access,
        })).collect::<Vec<_>>(),
        "DeviceCgroupRules": if s.asked.device_cgroup_rules.is_empty() {
            Value::Null
        } else {
            json!(s.asked.device_cgroup_rules)
        },
        "DeviceRequests": Value::Null,
        "ReadonlyRootfs": spec["root"]["readonly"].as_bool().unwrap_or(false),
        "AutoRemove": s.auto_remove,
        "RestartPolicy": {
            "Name": s.restart_policy.name(),
            "MaximumRetryCount": match s.restart_policy {
                super::restart::RestartPolicy::OnFailure { max } => max,
                _ => 0,
            },
        },
        "LogConfig": { "Type": s.log_driver.name(), "Config": log_config },
        "CgroupParent": s.cgroup.dirs.values().next().and_then(|d| d.parent()).map(|p| p.display().to_string()),
        "CgroupnsMode": private_or_host("cgroup"),
    });
    let port_bindings: BTreeMap<String, Value> = s
        .endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .fold(BTreeMap::new(), |mut map, p| {
            let key = format!("{}/{}", p.container_port, p.proto.name());
            let entry = map.entry(key).or_insert_with(|| json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(
                    json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}),
                );
            }
            map
        });
    let more = json!({
        "PortBindings": port_bindings,
        "PublishAllPorts": false,
        "Dns": Value::Null,
        "SecurityOpt": Value::Null,
        "Binds": Value::Null,
        "CapAdd": Value::Null,
        "CapDrop": Value::Null,
        "Privileged": spec["linux"]["seccomp"].is_null() && spec["linux"]["maskedPaths"].is_null(),
        "Init": if s.asked.init { Value::Bool(true) } else { Value::Null },
        "Tmpfs": tmpfs,
        "Isolation": s.asked.isolation,
        "Runtime": if vm { "capsa-vm" } else { "runc" },
        "PidMode": if has_ns("pid") { "" } else { "host" },
        "IpcMode": if has_ns("ipc") { "private" } else { "host" },
        "UTSMode": if has_ns("uts") { "" } else { "host" },
        "UsernsMode": if has_ns("user") { "auto" } else { "" },
        "ExtraHosts": s.extra_hosts.iter().map(|(h, ip)| format!("{h}:{ip}")).collect::<Vec<_>>(),
        "GroupAdd": group_add(spec),
        "Links": Value::Null,
        "VolumesFrom": if s.asked.volumes_from.is_empty() {
            Value::Null
        } else {
            json!(s.asked.volumes_from)
        },
        "VolumeDriver": s.asked.volume_driver,
        "ConsoleSize": [0, 0],
        "ShmSize": shm_size(spec),
        "Sysctls": spec["linux"]["sysctl"].as_object().filter(|m| !m.is_empty()),
        "OomScoreAdj": spec["process"]["oomScoreAdj"].as_i64().unwrap_or(0),
        "MaskedPaths": spec["linux"]["maskedPaths"],
        "ReadonlyPaths": spec["linux"]["readonlyPaths"],
    });
    if let (Some(v), Some(more)) = (v.as_object_mut(), more.as_object()) {
        v.extend(more.clone());
    }
    v
}

/// `HostConfig.Ulimits` as Docker shows them (null when none was given).
fn ulimits(s: &State) -> Value {
    if s.asked.ulimits.is_empty() {
        return Value::Null;
    }
    s.asked
        .ulimits
        .iter()
        .map(|u| {
            json!({
                "Name": u.name,
                "Hard": super::tuning::show_limit(u.hard),
                "Soft": super::tuning::show_limit(u.soft),
            })
        })
        .collect()
}

/// `HostConfig.GroupAdd` from the spec (null when none was given).
fn group_add(spec: &Value) -> Value {
    let key = crate::linux::process::init::GROUP_ADD_ANNOTATION;
    match spec["annotations"][key].as_str() {
        Some(groups) => groups.lines().collect::<Vec<_>>().into(),
        None => Value::Null,
    }
}

/// `HostConfig.ShmSize`: the size option of the spec's /dev/shm mount, in bytes.
fn shm_size(spec: &Value) -> u64 {
    spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["destination"] == "/dev/shm")
        .and_then(|m| m["options"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str()?.strip_prefix("size="))
        .find_map(|size| match size.strip_suffix('k') {
            Some(k) => k.parse::<u64>().ok().map(|k| k << 10),
            None => size.parse().ok(),
        })
        .unwrap_or(super::tuning::DEFAULT_SHM_SIZE)
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

/// Docker's `Mounts` of container `s` whose OCI spec is `spec`: the mounts the user asked
/// for (`inspect` and the Engine API's container list show them), a volume's with its
/// name.
pub fn mounts(store: &ContainerStore, s: &State, spec: &Value) -> Value {
    let volumes = crate::volume::VolumeStore::new(store.root());
    let by_path: BTreeMap<String, String> = s
        .volumes
        .iter()
        .filter_map(|name| {
            let v = volumes.get(name).ok()?;
            Some((v.data_dir().display().to_string(), name.clone()))
        })
        .collect();
    spec["mounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| is_users_mount(m))
                .map(|m| {
                    let rw = !m["options"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|x| x == "ro"));
                    match m["source"].as_str().and_then(|p| by_path.get(p)) {
                        Some(name) => json!({
                            "Type": "volume",
                            "Name": name,
                            "Source": m["source"],
                            "Destination": m["destination"],
                            "Driver": "local",
                            "Mode": "",
                            "RW": rw,
                            "Propagation": "",
                        }),
                        None => json!({
                            "Type": "bind",
                            "Source": m["source"],
                            "Destination": m["destination"],
                            "Mode": "",
                            "RW": rw,
                            "Propagation": propagation(m),
                        }),
                    }
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into()
}

/// The propagation option of a spec mount (`rprivate` when none is given, as Docker shows).
fn propagation(m: &Value) -> String {
    const MODES: [&str; 6] = [
        "rshared", "rslave", "rprivate", "shared", "slave", "private",
    ];
    m["options"]
        .as_array()
        .and_then(|o| {
            o.iter()
                .filter_map(Value::as_str)
                .find(|o| MODES.contains(o))
        })
        .unwrap_or("rprivate")
        .to_string()
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
