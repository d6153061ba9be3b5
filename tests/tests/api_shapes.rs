//! The response shapes of `capsa serve` against the Engine API's schema (v1.50), for the
//! endpoints clients read fields from: every field the schema marks as always present is
//! there, with the schema's JSON type. The shapes below are written from the API's
//! reference, one per endpoint: an SDK that deserialises into typed structs (the Go client,
//! docker-py's models, bollard) fails on a missing field or a wrong type long before a user
//! sees a wrong value.
//!
//! The shape language: a JSON object maps each required key to its shape; a string names a
//! type (`string`, `integer`, `number`, `boolean`, `object`, `array`, `any`), with a
//! trailing `?` when the schema allows null; a one-element array is "an array whose every
//! element has this shape".

#![recursion_limit = "256"]

use capsa_tests::{text, TestEnv};
use serde_json::{json, Value};

/// Where `value` departs from `shape`, each as `path: what`.
fn departures(path: &str, value: &Value, shape: &Value, out: &mut Vec<String>) {
    match shape {
        Value::String(kind) => {
            let (kind, nullable) = match kind.strip_suffix('?') {
                Some(k) => (k, true),
                None => (kind.as_str(), false),
            };
            let fits = match (kind, value) {
                (_, Value::Null) => nullable || kind == "any",
                ("string", Value::String(_)) | ("boolean", Value::Bool(_)) => true,
                ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
                ("number", Value::Number(_)) => true,
                ("object", Value::Object(_)) | ("array", Value::Array(_)) => true,
                ("any", _) => true,
                _ => false,
            };
            if !fits {
                out.push(format!("{path}: expected {kind}, got {value}"));
            }
        }
        Value::Object(fields) => {
            let Some(object) = value.as_object() else {
                out.push(format!("{path}: expected an object, got {value}"));
                return;
            };
            for (key, inner) in fields {
                match object.get(key) {
                    Some(v) => departures(&format!("{path}.{key}"), v, inner, out),
                    None => out.push(format!("{path}.{key}: missing")),
                }
            }
        }
        Value::Array(element) => {
            let Some(items) = value.as_array() else {
                out.push(format!("{path}: expected an array, got {value}"));
                return;
            };
            for (i, item) in items.iter().enumerate() {
                departures(&format!("{path}[{i}]"), item, &element[0], out);
            }
        }
        _ => out.push(format!("{path}: bad shape {shape}")),
    }
}

fn assert_shape(what: &str, value: &Value, shape: &Value) {
    let mut out = Vec::new();
    departures(what, value, shape, &mut out);
    assert!(out.is_empty(), "{what}:\n{}\n{value:#}", out.join("\n"));
}

fn get(api: &capsa_tests::api::ApiServer, path: &str) -> Value {
    let (status, body) = api.request_json("GET", path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn container_state() -> Value {
    json!({
        "Status": "string", "Running": "boolean", "Paused": "boolean",
        "Restarting": "boolean", "OOMKilled": "boolean", "Dead": "boolean",
        "Pid": "integer", "ExitCode": "integer", "Error": "string",
        "StartedAt": "string", "FinishedAt": "string"
    })
}

fn mount_point() -> Value {
    json!({"Type": "string", "Source": "string", "Destination": "string", "Mode": "string",
           "RW": "boolean", "Propagation": "string"})
}

#[test]
fn responses_have_the_engine_apis_fields_and_types() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&["volume", "create", "shapes-data"]);
    api.docker_ok(&["network", "create", "shapes-net"]);
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "shaped",
        "--network",
        "shapes-net",
        "-p",
        "127.0.0.1::80",
        "-v",
        "shapes-data:/data",
        "-l",
        "k=v",
        "busybox",
        "sh",
        "-c",
        "touch /made; exec sleep 600",
    ]);

    assert_shape(
        "version",
        &get(&api, "/v1.50/version"),
        &json!({
            "Version": "string", "ApiVersion": "string", "MinAPIVersion": "string",
            "GitCommit": "string", "GoVersion": "string", "Os": "string", "Arch": "string",
            "KernelVersion": "string", "Components": [{"Name": "string", "Version": "string"}],
            "Platform": {"Name": "string"}
        }),
    );
    assert_shape(
        "info",
        &get(&api, "/v1.50/info"),
        &json!({
            "ID": "string", "Containers": "integer", "ContainersRunning": "integer",
            "ContainersPaused": "integer", "ContainersStopped": "integer", "Images": "integer",
            "Driver": "string", "DriverStatus": "array", "MemoryLimit": "boolean",
            "SwapLimit": "boolean", "CpuCfsPeriod": "boolean", "CpuCfsQuota": "boolean",
            "CPUShares": "boolean", "CPUSet": "boolean", "PidsLimit": "boolean",
            "Debug": "boolean", "NFd": "integer", "NGoroutines": "integer",
            "SystemTime": "string", "LoggingDriver": "string", "CgroupDriver": "string",
            "CgroupVersion": "string", "NEventsListener": "integer", "KernelVersion": "string",
            "OperatingSystem": "string", "OSType": "string", "Architecture": "string",
            "NCPU": "integer", "MemTotal": "integer", "DockerRootDir": "string",
            "Name": "string", "Labels": ["string"], "ExperimentalBuild": "boolean",
            "ServerVersion": "string", "Runtimes": "object", "DefaultRuntime": "string",
            "Swarm": {"LocalNodeState": "string"}, "SecurityOptions": ["string"],
            "Plugins": {"Volume": "array?", "Network": "array?", "Log": "array?"},
            "RegistryConfig": "object?"
        }),
    );

    let listed = get(&api, "/v1.50/containers/json?all=1");
    assert_shape(
        "containers/json",
        &listed,
        &json!([{
            "Id": "string", "Names": ["string"], "Image": "string", "ImageID": "string",
            "Command": "string", "Created": "integer",
            "Ports": [{"PrivatePort": "integer", "Type": "string"}],
            "Labels": "object", "State": "string", "Status": "string",
            "HostConfig": {"NetworkMode": "string"},
            "NetworkSettings": {"Networks": "object"}, "Mounts": [mount_point()]
        }]),
    );
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    let inspected = get(&api, "/v1.50/containers/shaped/json");
    assert_shape(
        "containers/{id}/json",
        &inspected,
        &json!({
            "Id": "string", "Created": "string", "Path": "string", "Args": ["string"],
            "State": container_state(), "Image": "string", "ResolvConfPath": "string",
            "HostnamePath": "string", "HostsPath": "string", "LogPath": "string",
            "Name": "string", "RestartCount": "integer", "Driver": "string",
            "Platform": "string", "MountLabel": "string", "ProcessLabel": "string",
            "AppArmorProfile": "string",
            "HostConfig": {
                "Binds": "array?", "NetworkMode": "string", "PortBindings": "object?",
                "RestartPolicy": {"Name": "string", "MaximumRetryCount": "integer"},
                "AutoRemove": "boolean", "CapAdd": "array?", "CapDrop": "array?",
                "Dns": "array?", "ExtraHosts": "array?", "Privileged": "boolean",
                "PublishAllPorts": "boolean", "ReadonlyRootfs": "boolean",
                "SecurityOpt": "array?", "Tmpfs": "object?", "Memory": "integer",
                "NanoCpus": "integer", "PidsLimit": "integer?", "LogConfig": {"Type": "string", "Config": "object"},
                "CgroupParent": "string", "Isolation": "string", "Runtime": "string",
                "ConsoleSize": ["integer"], "ShmSize": "integer", "VolumesFrom": "array?"
            },
            "GraphDriver": {"Name": "string", "Data": "object?"},
            "Mounts": [mount_point()],
            "Config": {
                "Hostname": "string", "Domainname": "string", "User": "string",
                "AttachStdin": "boolean", "AttachStdout": "boolean", "AttachStderr": "boolean",
                "Tty": "boolean", "OpenStdin": "boolean", "StdinOnce": "boolean",
                "Env": ["string"], "Cmd": "array?", "Image": "string", "Volumes": "object?",
                "WorkingDir": "string", "Entrypoint": "array?", "Labels": "object"
            },
            "NetworkSettings": {
                "Ports": "object", "IPAddress": "string", "Gateway": "string",
                "MacAddress": "string", "IPPrefixLen": "integer",
                "Networks": "object"
            }
        }),
    );
    for (name, endpoint) in inspected["NetworkSettings"]["Networks"]
        .as_object()
        .expect("networks")
    {
        assert_shape(
            &format!("Networks.{name}"),
            endpoint,
            &json!({
                "IPAMConfig": "object?", "Links": "array?", "Aliases": "array?",
                "NetworkID": "string", "EndpointID": "string", "Gateway": "string",
                "IPAddress": "string", "IPPrefixLen": "integer", "MacAddress": "string",
                "DriverOpts": "object?"
            }),
        );
    }

    let top = get(&api, "/v1.50/containers/shaped/top");
    assert_shape(
        "top",
        &top,
        &json!({"Titles": ["string"], "Processes": [["string"]]}),
    );
    let changes = get(&api, "/v1.50/containers/shaped/changes");
    assert_shape(
        "changes",
        &changes,
        &json!([{"Path": "string", "Kind": "integer"}]),
    );
    let stats = get(&api, "/v1.50/containers/shaped/stats?stream=0");
    assert_shape(
        "stats",
        &stats,
        &json!({
            "read": "string", "preread": "string", "name": "string", "id": "string",
            "num_procs": "integer", "pids_stats": "object", "blkio_stats": "object",
            "storage_stats": "object",
            "cpu_stats": {"cpu_usage": {"total_usage": "integer"}, "online_cpus": "integer",
                          "system_cpu_usage": "integer", "throttling_data": "object"},
            "precpu_stats": {"cpu_usage": {"total_usage": "integer"}},
            "memory_stats": {"usage": "integer", "limit": "integer", "stats": "object"}
        }),
    );

    let (status, created) = api.request_json(
        "POST",
        "/v1.50/containers/shaped/exec",
        Some(&json!({"Cmd": ["true"], "AttachStdout": true})),
    );
    assert_eq!(status, 201, "{created}");
    assert_shape("exec create", &created, &json!({"Id": "string"}));
    let exec = get(
        &api,
        &format!("/v1.50/exec/{}/json", created["Id"].as_str().unwrap()),
    );
    assert_shape(
        "exec/{id}/json",
        &exec,
        &json!({
            "ID": "string", "Running": "boolean", "ExitCode": "integer?",
            "ProcessConfig": {"tty": "boolean", "entrypoint": "string", "arguments": ["string"],
                              "privileged": "boolean", "user": "string?"},
            "OpenStdin": "boolean", "OpenStderr": "boolean", "OpenStdout": "boolean",
            "CanRemove": "boolean", "ContainerID": "string", "DetachKeys": "string",
            "Pid": "integer"
        }),
    );

    let images = get(&api, "/v1.50/images/json");
    assert_shape(
        "images/json",
        &images,
        &json!([{
            "Id": "string", "ParentId": "string", "RepoTags": ["string"],
            "RepoDigests": ["string"], "Created": "integer", "Size": "integer",
            "SharedSize": "integer", "Labels": "object?", "Containers": "integer"
        }]),
    );
    assert_shape(
        "images/{name}/json",
        &get(&api, "/v1.50/images/busybox/json"),
        &json!({
            "Id": "string", "RepoTags": ["string"], "RepoDigests": ["string"],
            "Parent": "string", "Comment": "string", "Created": "string",
            "Config": "object?", "Architecture": "string", "Os": "string",
            "Size": "integer", "GraphDriver": {"Name": "string"},
            "RootFS": {"Type": "string", "Layers": ["string"]},
            "Metadata": "object"
        }),
    );
    assert_shape(
        "images/{name}/history",
        &get(&api, "/v1.50/images/busybox/history"),
        &json!([{
            "Id": "string", "Created": "integer", "CreatedBy": "string",
            "Tags": "array?", "Size": "integer", "Comment": "string"
        }]),
    );

    let network = json!({
        "Name": "string", "Id": "string", "Created": "string", "Scope": "string",
        "Driver": "string", "EnableIPv6": "boolean", "Internal": "boolean",
        "Attachable": "boolean", "Ingress": "boolean",
        "IPAM": {"Driver": "string", "Options": "object?",
                 "Config": [{"Subnet": "string", "Gateway": "string"}]},
        "ConfigOnly": "boolean", "Containers": "object", "Options": "object",
        "Labels": "object"
    });
    assert_shape(
        "networks",
        &get(&api, "/v1.50/networks"),
        &json!([network.clone()]),
    );
    let ours = get(&api, "/v1.50/networks/shapes-net");
    assert_shape("networks/{id}", &ours, &network);
    for (id, member) in ours["Containers"].as_object().expect("members") {
        assert_shape(
            &format!("networks/shapes-net.Containers.{id}"),
            member,
            &json!({"Name": "string", "EndpointID": "string", "MacAddress": "string",
                    "IPv4Address": "string", "IPv6Address": "string"}),
        );
    }

    let volume = json!({
        "Name": "string", "Driver": "string", "Mountpoint": "string",
        "CreatedAt": "string", "Labels": "object?", "Scope": "string", "Options": "object?"
    });
    assert_shape(
        "volumes",
        &get(&api, "/v1.50/volumes"),
        &json!({"Volumes": [volume.clone()], "Warnings": "array?"}),
    );
    assert_shape(
        "volumes/{name}",
        &get(&api, "/v1.50/volumes/shapes-data"),
        &volume,
    );

    assert_shape(
        "system/df",
        &get(&api, "/v1.50/system/df"),
        &json!({
            "LayersSize": "integer", "Images": "array", "Containers": "array",
            "Volumes": [{"Name": "string", "UsageData": {"Size": "integer", "RefCount": "integer"}}],
            "BuildCache": "array?"
        }),
    );

    // The error shape: `{"message"}` with a 4xx.
    let (status, body) = api.request_json("GET", "/v1.50/containers/nope/json", None);
    assert_eq!(status, 404);
    assert_shape("error", &body, &json!({"message": "string"}));
    let out = env.capsa(&["rm", "-f", "shaped"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The checker itself: a missing field, a wrong type and a null where none is allowed are
/// each reported with their path; what fits is not.
#[test]
fn the_shape_checker_names_each_departure() {
    let shape = json!({"a": "integer", "b": ["string"], "c": {"d": "boolean?"}, "e": "string"});
    let mut out = Vec::new();
    departures(
        "x",
        &json!({"a": "1", "b": ["ok", 2], "c": {"d": null}, "e": null}),
        &shape,
        &mut out,
    );
    assert_eq!(
        out,
        vec![
            "x.a: expected integer, got \"1\"",
            "x.b[1]: expected string, got 2",
            "x.e: expected string, got null",
        ]
    );
    let mut none = Vec::new();
    departures(
        "x",
        &json!({"a": 1, "b": [], "c": {"d": true}, "e": ""}),
        &shape,
        &mut none,
    );
    assert!(none.is_empty(), "{none:?}");
    let mut missing = Vec::new();
    departures("x", &json!({}), &json!({"k": "any"}), &mut missing);
    assert_eq!(missing, vec!["x.k: missing"]);
}
