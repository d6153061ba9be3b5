//! What docker-py's own suite asks beyond the basic verbs: swarm mode answered as a dockerd
//! outside a swarm, `info`'s always-present keys, inspect's full `HostConfig`, endpoint
//! settings and volume mounts, `POST /containers/{id}/update`, and removing a container
//! its restart policy is about to start again.

use capsa_tests::api::ApiServer;
use capsa_tests::{eventually, text, TestEnv};
use serde_json::{json, Value};
use std::time::Duration;

const NOT_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";

#[test]
fn swarm_endpoints_answer_as_a_node_outside_a_swarm() {
    let env = TestEnv::new();
    let api = env.serve();
    for (method, path) in [
        ("GET", "/v1.50/swarm"),
        ("POST", "/v1.50/swarm/update?version=1"),
        ("GET", "/v1.50/swarm/unlockkey"),
        ("GET", "/v1.50/services"),
        ("POST", "/v1.50/services/create"),
        ("GET", "/v1.50/tasks"),
        ("GET", "/v1.50/nodes/abc"),
        ("DELETE", "/v1.50/secrets/s"),
        ("GET", "/v1.50/configs"),
    ] {
        let (status, body) = api.request_json(method, path, Some(&json!({})));
        assert_eq!(status, 503, "{method} {path}: {body}");
        assert_eq!(body["message"], NOT_MANAGER, "{method} {path}");
    }
    let (status, body) = api.request_json("POST", "/v1.50/swarm/leave?force=1", None);
    assert_eq!(
        (status, body["message"].as_str()),
        (503, Some("This node is not part of a swarm"))
    );
    // Never pretends to have made or joined a swarm.
    for path in ["/v1.50/swarm/init", "/v1.50/swarm/join"] {
        let (status, body) =
            api.request_json("POST", path, Some(&json!({"ListenAddr": "0.0.0.0:2377"})));
        assert_eq!(status, 503, "{path}");
        assert!(
            body["message"].as_str().unwrap().contains("no swarm mode"),
            "{body}"
        );
    }
    // The CLI sees an inactive node; docker-py's forced leave counts 503 as "already out".
    let state = api.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(state.trim(), "inactive");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import docker; c = docker.from_env(); print(c.api.leave_swarm(force=True))",
        ])
        .env("DOCKER_HOST", api.docker_host())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "True\n", "{}", text(&out.stderr));
}

#[test]
fn info_has_the_keys_dockerd_always_sends() {
    let env = TestEnv::new();
    let api = env.serve();
    let (status, info) = api.request_json("GET", "/v1.50/info", None);
    assert_eq!(status, 200);
    assert_eq!(info["Debug"], false);
    assert_eq!(info["ExperimentalBuild"], false);
    assert_eq!(info["LiveRestoreEnabled"], false);
    assert_eq!(
        info["Swarm"],
        json!({"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
               "ControlAvailable": false, "Error": "", "RemoteManagers": null})
    );
    // CPU shares and cpusets are applied (`--cpu-shares`, `--cpuset-cpus`): the capability
    // flags say so.
    assert_eq!(info["CPUShares"], true);
    assert_eq!(info["CPUSet"], true);
    assert!(info["NFd"].as_u64().unwrap() > 0, "{info}");
    assert!(info["SystemTime"].is_string());
}

/// Creates a container from `config` over the API; returns its ID.
fn create(api: &ApiServer, name: &str, config: Value) -> String {
    let (status, body) = api.request_json(
        "POST",
        &format!("/v1.50/containers/create?name={name}"),
        Some(&config),
    );
    assert_eq!(status, 201, "{body}\n{}", api.log());
    body["Id"].as_str().unwrap().to_string()
}

fn inspect(api: &ApiServer, id: &str) -> Value {
    let (status, body) = api.request_json("GET", &format!("/v1.50/containers/{id}/json"), None);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn inspect_shows_every_host_config_key_as_given_or_as_docker_zero_values() {
    let env = TestEnv::new();
    let api = env.serve();
    let out_dir = tempfile::tempdir().unwrap();
    let bind = format!("{}:/out:rw,rprivate", out_dir.path().display());
    let id = create(
        &api,
        "asked",
        json!({
            "Image": "busybox",
            "Cmd": ["sh", "-c", "env > /out/env"],
            "Env": ["Foo", "Other=one", "Blank="],
            "StopTimeout": 25,
            "HostConfig": {
                "Binds": [bind],
                "Tmpfs": {"/t": "size=3M"},
                "Init": true,
                "Isolation": "default",
                "NetworkMode": "none",
                "LogConfig": {"Type": "json-file", "Config": {"max-file": "100"}},
            },
        }),
    );
    let c = inspect(&api, &id);
    let h = &c["HostConfig"];
    assert_eq!(h["Tmpfs"], json!({"/t": "size=3M"}));
    assert_eq!(h["Init"], true);
    assert_eq!(h["Isolation"], "default");
    assert_eq!(h["Runtime"], "runc");
    assert_eq!(h["CgroupnsMode"], "private");
    assert_eq!(
        h["LogConfig"],
        json!({"Type": "json-file", "Config": {"max-file": "100"}})
    );
    for (key, zero) in [
        ("CpuShares", json!(0)),
        ("CpusetCpus", json!("")),
        ("MemorySwap", json!(0)),
        ("MemorySwappiness", Value::Null),
        ("DeviceCgroupRules", Value::Null),
        ("VolumeDriver", json!("")),
        ("Links", Value::Null),
    ] {
        assert_eq!(h.get(key), Some(&zero), "HostConfig.{key}");
    }
    assert_eq!(c["Config"]["StopTimeout"], 25);
    let env_list = c["Config"]["Env"].as_array().unwrap();
    for wanted in ["Foo", "Other=one", "Blank="] {
        assert!(
            env_list.contains(&json!(wanted)),
            "{wanted} in {env_list:?}"
        );
    }
    let bind_mount = &c["Mounts"][0];
    assert_eq!(
        (&bind_mount["Type"], &bind_mount["Propagation"]),
        (&json!("bind"), &json!("rprivate"))
    );
    // "Foo" without a value is shown, never set from the server's environment.
    let (status, _) = api.request("POST", &format!("/v1.50/containers/{id}/start"), None);
    assert_eq!(status, 204);
    let (status, _) = api.request("POST", &format!("/v1.50/containers/{id}/wait"), None);
    assert_eq!(status, 200);
    let seen = std::fs::read_to_string(out_dir.path().join("env")).unwrap();
    assert!(seen.contains("Other=one\n"), "{seen}");
    assert!(!seen.lines().any(|l| l.starts_with("Foo")), "{seen}");

    // Unasked: Init null, Isolation empty, no StopTimeout, LogConfig without options.
    let plain = create(
        &api,
        "plain",
        json!({"Image": "busybox", "HostConfig": {"NetworkMode": "none"}}),
    );
    let c = inspect(&api, &plain);
    assert_eq!(c["HostConfig"]["Init"], Value::Null);
    assert_eq!(c["HostConfig"]["Isolation"], "");
    assert_eq!(c["HostConfig"]["Tmpfs"], json!({}));
    assert_eq!(c["Config"]["StopTimeout"], Value::Null);
    assert_eq!(c["HostConfig"]["LogConfig"]["Config"], json!({}));
    // The CLI reads the same keys.
    assert_eq!(
        env.inspect(
            "asked",
            "{{.HostConfig.Isolation}} {{.HostConfig.Runtime}} {{.Config.StopTimeout}}"
        ),
        "default runc 25"
    );

    // Propagation to or from the host is refused, named.
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create",
        Some(&json!({"Image": "busybox", "HostConfig": {
            "Binds": [format!("{}:/out:rw,rshared", out_dir.path().display())]}})),
    );
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("rshared"),
        "{body}"
    );
    // An unknown log driver, in dockerd's words.
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create",
        Some(&json!({"Image": "busybox", "HostConfig": {"LogConfig": {"Type": "asdf"}}})),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "logger: no log driver named 'asdf' is registered"
    );
    for name in ["asked", "plain"] {
        api.docker_ok(&["rm", "-f", name]);
    }
}

#[test]
fn endpoint_settings_and_volume_mounts_are_docker_shaped() {
    let env = TestEnv::new();
    let api = env.serve();
    let net_id = api
        .docker_ok(&["network", "create", "apinet"])
        .trim()
        .to_string();
    api.docker_ok(&["volume", "create", "vol1"]);
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "member",
        "--network",
        "apinet",
        "--network-alias",
        "db",
        "-v",
        "vol1:/data",
        "busybox",
        "sleep",
        "300",
    ]);
    let c = inspect(&api, "member");
    let e = &c["NetworkSettings"]["Networks"]["apinet"];
    assert_eq!(e["NetworkID"], net_id);
    assert_eq!(e["Aliases"], json!(["db"]));
    assert_eq!(e["DriverOpts"], Value::Null);
    assert_eq!(e["IPAMConfig"], Value::Null);
    assert_eq!(e["Links"], Value::Null);
    assert_eq!(e["GlobalIPv6Address"], "");
    assert!(e["IPPrefixLen"].as_u64().is_some_and(|p| p > 0), "{e}");
    assert!(e["IPAddress"].as_str().unwrap().contains('.'), "{e}");
    let names = e["DNSNames"].as_array().unwrap();
    assert!(
        names.contains(&json!("member")) && names.contains(&json!("db")),
        "{e}"
    );
    let mount = &c["Mounts"][0];
    assert_eq!(mount["Type"], "volume");
    assert_eq!(mount["Name"], "vol1");
    assert_eq!(mount["Destination"], "/data");
    assert_eq!(mount["RW"], true);
    // An address asked for shows as IPAMConfig (one in the network's own subnet).
    let subnet = api.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        "apinet",
    ]);
    let base = subnet.trim().rsplit_once('.').unwrap().0.to_string();
    let fixed = format!("{base}.77");
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create?name=fixed",
        Some(&json!({"Image": "busybox", "HostConfig": {"NetworkMode": "apinet"},
            "NetworkingConfig": {"EndpointsConfig": {"apinet": {"IPAMConfig": {"IPv4Address": fixed}}}}})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = api.request("POST", "/v1.50/containers/fixed/start", None);
    assert_eq!(status, 204, "{}", api.log());
    let e = &inspect(&api, "fixed")["NetworkSettings"]["Networks"]["apinet"];
    assert_eq!(e["IPAMConfig"], json!({ "IPv4Address": fixed }));
    api.docker_ok(&["rm", "-f", "fixed"]);
    // The default bridge: no aliases, no DNS names.
    api.docker_ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "300"]);
    let e = &inspect(&api, "plain")["NetworkSettings"]["Networks"]["bridge"];
    assert_eq!(
        (&e["Aliases"], &e["DNSNames"]),
        (&Value::Null, &Value::Null)
    );
    let bridge_id = api.docker_ok(&["network", "inspect", "-f", "{{.Id}}", "bridge"]);
    assert_eq!(e["NetworkID"], bridge_id.trim());
    api.docker_ok(&["rm", "-f", "member", "plain"]);
    api.docker_ok(&["network", "rm", "apinet"]);
    api.docker_ok(&["volume", "rm", "vol1"]);
}

#[test]
fn update_changes_limits_live_and_the_restart_policy() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "upd",
        "--network",
        "none",
        "-m",
        "400m",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "300",
    ]);
    api.docker_ok(&[
        "update",
        "--memory",
        "300m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "--restart",
        "on-failure:3",
        "upd",
    ]);
    let got = api.docker_ok(&[
        "inspect", "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
        "upd",
    ]);
    assert_eq!(
        got.trim(),
        format!("{} 500000000 50 on-failure:3", 300u64 << 20)
    );
    // Live, in the running container's cgroup (cgroup v1 hosts, as tests/limits.rs).
    let id = env.inspect("upd", "{{.Id}}");
    let parent = env.cgroup_parent().trim_start_matches('/').to_string();
    let limit = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(&parent)
        .join(&id)
        .join("memory.limit_in_bytes");
    if limit.parent().unwrap().exists() {
        assert_eq!(
            std::fs::read_to_string(&limit).unwrap().trim(),
            (300u64 << 20).to_string()
        );
    }
    // What capsa never sets is refused, named; the unknown container is a 404.
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/upd/update",
        Some(&json!({"KernelMemory": 3})),
    );
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("KernelMemory"),
        "{body}"
    );
    let (status, _) = api.request_json(
        "POST",
        "/v1.50/containers/nope/update",
        Some(&json!({"Memory": 10_000_000})),
    );
    assert_eq!(status, 404);
    api.docker_ok(&["rm", "-f", "upd"]);
}

#[test]
fn a_container_about_to_restart_is_not_removed_without_force() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--network",
        "none",
        "--restart",
        "always",
        "busybox",
        "false",
    ]);
    // After a few failures the back-off keeps it waiting between runs for seconds.
    eventually("a few restarts", Duration::from_secs(60), || {
        let seen = env.inspect("again", "{{.RestartCount}} {{.State.Restarting}}");
        seen.split(' ')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 4)
            && seen.ends_with("true")
    });
    // Whenever it is asked (running, or waiting between runs), rm without force refuses;
    // between runs in dockerd's words.
    eventually(
        "rm to meet it between runs",
        Duration::from_secs(60),
        || {
            let out = api.docker(&["rm", "again"]);
            assert!(!out.status.success(), "removed while restarting");
            let err = text(&out.stderr).to_lowercase();
            assert!(err.contains("stop the container before"), "{err}");
            err.contains("container is restarting: stop the container before")
        },
    );
    api.docker_ok(&["rm", "-f", "again"]);
}

#[test]
fn a_bad_load_is_an_error_in_the_stream_and_networks_show_no_ipam_options() {
    let env = TestEnv::new();
    let api = env.serve();
    // docker-py reads the error from the stream (ImageLoadError), the CLI prints it.
    let script = r#"
import docker
c = docker.from_env()
try:
    c.images.load(b"abc")
except docker.errors.ImageLoadError as e:
    print("load error")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .env("DOCKER_HOST", api.docker_host())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "load error\n", "{}", text(&out.stderr));
    let (status, body) = api.request("POST", "/v1.50/images/load", Some(b"abc"));
    assert_eq!(status, 200);
    let line: Value = serde_json::from_slice(&body).unwrap();
    assert!(line["error"].is_string(), "{line}");
    assert_eq!(line["errorDetail"]["message"], line["error"]);
    api.docker_ok(&["network", "create", "plainnet"]);
    for net in ["bridge", "plainnet"] {
        let (status, n) = api.request_json("GET", &format!("/v1.50/networks/{net}"), None);
        assert_eq!(status, 200);
        assert_eq!(n["IPAM"]["Options"], Value::Null, "{net}: {n}");
    }
    api.docker_ok(&["network", "rm", "plainnet"]);
}

#[test]
fn capsa_update_changes_a_running_containers_limits() {
    let env = TestEnv::new();
    let out = env.capsa(&[
        "run",
        "-d",
        "--name",
        "cli-upd",
        "--network",
        "none",
        "-m",
        "64m",
        "busybox",
        "sleep",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.capsa(&[
        "update",
        "-m",
        "32m",
        "--restart",
        "unless-stopped",
        "cli-upd",
    ]);
    assert_eq!(text(&out.stdout), "cli-upd\n", "{}", text(&out.stderr));
    assert_eq!(
        env.inspect(
            "cli-upd",
            "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}"
        ),
        format!("{} unless-stopped", 32u64 << 20)
    );
    let out = env.capsa(&["update", "--cpus", "0.5", "nope"]);
    assert!(!out.status.success());
    assert!(env.capsa(&["rm", "-f", "cli-upd"]).status.success());
}

#[test]
fn settings_capsa_cannot_apply_are_refused_or_warned_never_dropped_silently() {
    let env = TestEnv::new();
    let api = env.serve();
    let throttle = json!([{"Path": "/dev/sda", "Rate": 1024}]);
    for (field, value) in [
        ("Links", json!(["other:alias"])),
        ("IpcMode", json!("host")),
        ("CgroupnsMode", json!("host")),
        ("StorageOpt", json!({"size": "1G"})),
        ("BlkioDeviceReadBps", throttle.clone()),
        ("BlkioDeviceWriteIOps", throttle),
        ("DeviceRequests", json!([{"Driver": "nvidia", "Count": -1}])),
        ("CpuRealtimeRuntime", json!(950000)),
    ] {
        let (status, body) = api.request_json(
            "POST",
            "/v1.50/containers/create",
            Some(&json!({"Image": "busybox", "HostConfig": {field: value}})),
        );
        assert_eq!(status, 400, "{field}: {body}");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    // Mount options that would mount something else than asked: refused by the --mount
    // parser, by name.
    for (mount, word) in [
        (
            json!({"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"Subpath": "tenantA"}}),
            "volume-subpath",
        ),
        (
            json!({"Type": "bind", "Source": "/tmp", "Target": "/t", "BindOptions": {"NonRecursive": true}}),
            "bind-recursive",
        ),
        (
            json!({"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}}),
            "volume driver",
        ),
    ] {
        let (status, body) = api.request_json(
            "POST",
            "/v1.50/containers/create",
            Some(&json!({"Image": "busybox", "HostConfig": {"Mounts": [mount]}})),
        );
        assert_eq!(status, 400, "{word}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(word),
            "{word}: {body}"
        );
    }
    // A network's driver options (enable_icc=false among them) are refused, not dropped.
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/networks/create",
        Some(&json!({"Name": "closed", "Options": {"com.docker.network.bridge.enable_icc": "false"}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("enable_icc"),
        "{body}"
    );
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create?name=pinned",
        Some(&json!({"Image": "busybox", "HostConfig": {"DnsSearch": ["example.com"], "CgroupnsMode": "private"}})),
    );
    assert_eq!(status, 201, "{body}");
    let warnings = body["Warnings"].to_string();
    assert!(warnings.contains("DnsSearch"), "{body}");
    api.docker_ok(&["rm", "-f", "pinned"]);
}

#[test]
fn network_disabled_oom_score_adj_and_system_paths_reach_the_container() {
    let env = TestEnv::new();
    let api = env.serve();
    let script = "ls /sys/class/net; cat /proc/self/oom_score_adj; cat /etc/passwd | wc -c; \
                  touch /tmp/x 2>&1 | grep -c Read-only";
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create?name=tight",
        Some(&json!({
            "Image": "busybox", "Cmd": ["sh", "-c", script], "NetworkDisabled": true,
            "HostConfig": {"OomScoreAdj": 300, "MaskedPaths": ["/etc/passwd"], "ReadonlyPaths": ["/tmp"]}
        })),
    );
    assert_eq!(status, 201, "{body}");
    api.docker_ok(&["start", "-a", "tight"]);
    let logs = api.docker_ok(&["logs", "tight"]);
    assert_eq!(
        logs, "lo\n300\n0\n1\n",
        "no eth0, the OOM score, masked and read-only paths"
    );
    let host = api.docker_ok(&["inspect", "-f", "{{json .HostConfig}}", "tight"]);
    let host: serde_json::Value = serde_json::from_str(&host).unwrap();
    assert_eq!(host["OomScoreAdj"], 300, "{host}");
    assert_eq!(host["MaskedPaths"], json!(["/etc/passwd"]), "{host}");
    api.docker_ok(&["rm", "tight"]);
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create",
        Some(&json!({"Image": "busybox", "HostConfig": {"OomScoreAdj": 1001}})),
    );
    assert_eq!(status, 400, "{body}");

    // The CLI's --oom-score-adj (raised: lowering needs CAP_SYS_RESOURCE in the host's
    // user namespace, which a test machine that is itself a container may not give), and
    // --security-opt systempaths=unconfined as Docker has it.
    assert_eq!(
        env.sh(&["--oom-score-adj", "400"], "cat /proc/self/oom_score_adj"),
        "400\n"
    );
    let out = env.run(&["--rm", "--oom-score-adj", "1001", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let masked_keys = "grep -c ' /proc/keys ' /proc/self/mountinfo; true";
    assert_eq!(env.sh(&[], masked_keys), "1\n", "masked by default");
    assert_eq!(
        env.sh(&["--security-opt", "systempaths=unconfined"], masked_keys),
        "0\n"
    );
}
