//! Volumes, networks, `system df` and events through `capsa serve`, driven by the real
//! docker CLI and raw requests; containers made with the capsa CLI meet the API's view.

use capsa_tests::{text, TestEnv};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn volumes_are_created_listed_inspected_refused_in_use_and_pruned() {
    let env = TestEnv::new();
    let api = env.serve();
    let made = api.docker_ok(&["volume", "create", "--label", "team=a", "data"]);
    assert_eq!(made.trim(), "data");
    let inspected = api.docker_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Driver}} {{.Scope}} {{.Labels.team}}",
        "data",
    ]);
    assert_eq!(inspected.trim(), "local local a");
    // Raw: 201 with Docker's fields; an empty name makes an anonymous volume.
    let (status, body) = api.request_json("POST", "/volumes/create", Some(&json!({})));
    assert_eq!(status, 201, "{body}");
    let anonymous = body["Name"].as_str().unwrap().to_string();
    assert_eq!(body["Driver"], "local");
    assert!(
        body["Mountpoint"].as_str().unwrap().ends_with("/_data"),
        "{body}"
    );
    assert!(body["CreatedAt"].is_string(), "{body}");
    let listed = api.docker_ok(&["volume", "ls", "-q", "--filter", "label=team=a"]);
    assert_eq!(listed.trim(), "data");
    let (_, all) = api.request_json("GET", "/volumes", None);
    assert_eq!(all["Volumes"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["Warnings"], json!([]));

    // In use by a container made with the capsa CLI: 409 in Docker's words.
    ok(&env.create(&["--name", "user", "-v", "data:/data", "busybox", "true"]));
    let out = api.docker(&["volume", "rm", "data"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("remove data: volume is in use - ["),
        "{}",
        text(&out.stderr)
    );
    let (status, _) = api.request("DELETE", "/volumes/data", None);
    assert_eq!(status, 409);
    let usage = api.docker_ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}}",
    ]);
    assert!(usage.contains("Local Volumes 2 1"), "{usage}");
    assert!(usage.contains("Containers 1 0"), "{usage}");
    assert!(usage.contains("Images 1 1"), "{usage}");
    ok(&env.capsa(&["rm", "-f", "user"]));

    // Prune takes the anonymous one; rm the named one; then both are 404.
    let pruned = api.docker_ok(&["volume", "prune", "-f"]);
    assert!(pruned.contains(&anonymous), "{pruned}");
    assert_eq!(api.docker_ok(&["volume", "rm", "data"]).trim(), "data");
    for name in ["data", anonymous.as_str()] {
        let (status, _) = api.request("GET", &format!("/volumes/{name}"), None);
        assert_eq!(status, 404);
    }
    let (status, _) = api.request("DELETE", "/volumes/gone?force=1", None);
    assert_eq!(status, 204);
    env.assert_clean();
}

#[test]
fn networks_are_created_inspected_connected_and_removed() {
    let env = TestEnv::new();
    let api = env.serve();
    let id = api.docker_ok(&[
        "network",
        "create",
        "--label",
        "tier=back",
        "--subnet",
        "10.77.3.0/24",
        "backend",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let listed = api.docker_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    for want in ["backend bridge", "bridge bridge", "host host", "none null"] {
        assert!(listed.lines().any(|l| l == want), "{want}: {listed}");
    }
    let filtered = api.docker_ok(&[
        "network",
        "ls",
        "-q",
        "--no-trunc",
        "--filter",
        "label=tier=back",
    ]);
    assert_eq!(filtered.trim(), id);
    let inspected = api.docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{.Id}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{.Labels.tier}}",
        "backend",
    ]);
    assert_eq!(
        inspected.trim(),
        format!("{id} 10.77.3.0/24 10.77.3.1 back")
    );

    // A second network of that name: 409.
    let (status, body) = api.request_json(
        "POST",
        "/networks/create",
        Some(&json!({"Name": "backend", "CheckDuplicate": true})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("already exists"),
        "{body}"
    );

    ok(&env.create(&["--name", "web", "busybox", "true"]));
    api.docker_ok(&["network", "connect", "--alias", "api", "backend", "web"]);
    let members = api.docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}}{{end}}",
        "backend",
    ]);
    assert_eq!(members.trim(), "web");
    let out = api.docker(&["network", "rm", "backend"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("active endpoints"),
        "{}",
        text(&out.stderr)
    );
    let (status, _) = api.request("DELETE", "/networks/backend", None);
    assert_eq!(status, 403);
    api.docker_ok(&["network", "disconnect", "backend", "web"]);
    // The MAC address a connect asks for is the interface's.
    let (status, body) = api.request_json(
        "POST",
        "/networks/backend/connect",
        Some(&json!({"Container": "web", "EndpointConfig": {"MacAddress": "02:42:ac:11:00:42"}})),
    );
    assert_eq!(status, 200, "{body}");
    let mac = api.docker_ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.backend.MacAddress}}",
        "web",
    ]);
    assert_eq!(mac.trim(), "02:42:ac:11:00:42");
    api.docker_ok(&["network", "disconnect", "backend", "web"]);
    let (status, _) = api.request_json(
        "POST",
        "/networks/backend/connect",
        Some(&json!({"Container": "nope"})),
    );
    assert_eq!(status, 404);
    // An address range outside its subnet is refused, naming it.
    let (status, body) = api.request_json(
        "POST",
        "/networks/create",
        Some(&json!({"Name": "ranged", "IPAM": {"Config": [{"Subnet": "10.77.9.0/24", "IPRange": "10.77.10.0/25"}]}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("10.77.10.0/25"),
        "{body}"
    );
    let (status, _) = api.request("GET", "/networks/ranged", None);
    assert_eq!(status, 404, "nothing was created");

    // Predefined networks cannot go; unknown ones are 404.
    let (status, _) = api.request("DELETE", "/networks/bridge", None);
    assert_eq!(status, 403);
    let (status, body) = api.request_json("GET", "/networks/nope", None);
    assert_eq!(status, 404);
    assert_eq!(body["message"], "network nope not found");
    assert_eq!(
        api.docker_ok(&["network", "rm", "backend"]).trim(),
        "backend"
    );
    let (status, _) = api.request("GET", &format!("/networks/{id}"), None);
    assert_eq!(status, 404);

    api.docker_ok(&["network", "create", "spare"]);
    let pruned = api.docker_ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("spare"), "{pruned}");
    ok(&env.capsa(&["rm", "-f", "web"]));
    env.assert_clean();
}

#[test]
fn events_of_the_capsa_cli_are_seen_by_docker_events_and_capsa_events() {
    let env = TestEnv::new();
    let api = env.serve();
    let since = now().to_string();
    ok(&env.run(&[
        "--rm",
        "--network",
        "none",
        "--name",
        "ev",
        "busybox",
        "true",
    ]));
    api.docker_ok(&["tag", "busybox", "evbox:v1"]);
    let until = now().to_string();

    let seen = api.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=ev",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{index .Actor.Attributes \"exitCode\"}}",
    ]);
    let lines: Vec<&str> = seen.lines().map(str::trim_end).collect();
    assert_eq!(
        lines,
        [
            "container create ev",
            "container start ev",
            "container die ev 0",
            "container destroy ev"
        ],
        "{seen}"
    );
    let images = api.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=image",
        "--filter",
        "event=tag",
        "--format",
        "{{json .}}",
    ]);
    let event: serde_json::Value = serde_json::from_str(images.lines().next().unwrap()).unwrap();
    assert_eq!(event["Action"], "tag");
    assert_eq!(event["Actor"]["Attributes"]["name"], "evbox:v1");
    assert_eq!(event["scope"], "local");
    assert!(event["timeNano"].as_i64().unwrap() > 0);

    // The capsa CLI prints them as docker does.
    let printed = ok(&env.capsa(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "event=die",
    ]));
    let line = printed.lines().next().unwrap_or_default();
    assert!(line.contains(" container die "), "{printed}");
    assert!(
        line.ends_with("(exitCode=0, image=busybox, name=ev)"),
        "{printed}"
    );
    assert!(line.as_bytes()[..30].ends_with(b"Z"), "{printed}");

    // Every verb of a container's life, in order.
    let since = now().to_string();
    ok(&env.run(&[
        "-d",
        "--network",
        "none",
        "--name",
        "life",
        "busybox",
        "sleep",
        "100",
    ]));
    for verb in [
        &["pause", "life"][..],
        &["unpause", "life"],
        &["rename", "life", "life2"],
        &["kill", "life2"],
    ] {
        ok(&env.capsa(verb));
    }
    capsa_tests::eventually(
        "the kill to be recorded",
        std::time::Duration::from_secs(20),
        || env.inspect("life2", "{{.State.Status}}").trim() == "exited",
    );
    ok(&env.capsa(&["rm", "life2"]));
    let until = now().to_string();
    let seen = api.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            "create life",
            "start life",
            "pause life",
            "unpause life",
            "rename life2",
            "kill life2",
            "die life2",
            "destroy life2"
        ],
        "{seen}"
    );

    // A follower sees what happens while it waits (the server ends it at until).
    let until = (now() + 20).to_string();
    let mut follower = api
        .docker_command(&[
            "events",
            "--until",
            &until,
            "--filter",
            "type=volume",
            "--format",
            "{{.Action}} {{.Actor.ID}}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    });
    // The follower subscribes before the volume is made.
    capsa_tests::eventually(
        "the follower to connect",
        std::time::Duration::from_secs(20),
        || {
            ok(&env.capsa(&["volume", "create", "live"]));
            ok(&env.capsa(&["volume", "rm", "live"]));
            reader.is_finished()
        },
    );
    let line = reader.join().unwrap();
    assert!(
        line == "create live\n" || line == "destroy live\n",
        "{line:?}"
    );
    let _ = follower.kill();
    let _ = follower.wait();

    let (status, body) = api.request(
        "GET",
        "/events?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D",
        None,
    );
    assert_eq!(status, 400, "{}", text(&body));
    env.assert_clean();
}

#[test]
fn docker_py_drives_volumes_networks_images_and_events() {
    let env = TestEnv::new();
    let api = env.serve();
    let script = r#"
import docker, json, time
c = docker.DockerClient(base_url=__import__("os").environ["DOCKER_HOST"], timeout=60)
t0 = int(time.time())
v = c.volumes.create(name="pyvol", labels={"k": "v"})
n = c.networks.create("pynet", driver="bridge", labels={"a": "b"})
c.images.get("busybox").tag("pybox", "v1")
tags = sorted(t for i in c.images.list() for t in i.tags)
df = c.df()
got = {
    "volume": [v.name, v.attrs["Labels"], v.attrs["Driver"]],
    "network": [c.networks.get("pynet").name, c.networks.get(n.id).attrs["Labels"]],
    "tags": tags,
    "df": [len(df["Images"]), len(df["Volumes"]), df["Volumes"][0]["UsageData"]["RefCount"]],
}
c.images.remove("pybox:v1")
n.remove()
v.remove()
t1 = int(time.time())
# (the test environment's own import of busybox may fall in the same second)
got["events"] = [(e["Type"], e["Action"]) for e in c.events(since=t0, until=t1, decode=True)
                 if e["Action"] != "import"]
print(json.dumps(got))
"#;
    let out = capsa_tests::run_bounded(
        {
            let mut cmd = std::process::Command::new("python3");
            cmd.args(["-c", script])
                .env("DOCKER_HOST", api.docker_host());
            cmd
        },
        std::time::Duration::from_secs(120),
    );
    let got: serde_json::Value = serde_json::from_str(ok(&out).trim()).unwrap();
    assert_eq!(got["volume"], json!(["pyvol", {"k": "v"}, "local"]));
    assert_eq!(got["network"], json!(["pynet", {"a": "b"}]));
    assert_eq!(got["tags"], json!(["busybox:latest", "pybox:v1"]));
    assert_eq!(got["df"], json!([1, 1, 0]));
    assert_eq!(
        got["events"],
        json!([
            ["volume", "create"],
            ["network", "create"],
            ["image", "tag"],
            ["image", "untag"],
            ["network", "destroy"],
            ["volume", "destroy"]
        ])
    );
    env.assert_clean();
}

/// How many descriptors process `pid` holds on the event journal.
fn journal_readers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|p| p.ends_with("events/journal"))
                .count()
        })
        .unwrap_or(0)
}

/// The pid of the `capsa serve` listening on `socket`.
fn server_pid(socket: &std::path::Path) -> u32 {
    let socket = socket.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("serve") && c.contains(socket)
            })
        })
        .expect("the server's pid")
}

#[test]
fn an_events_client_that_goes_away_leaves_no_follower_behind() {
    let env = TestEnv::new();
    let api = env.serve();
    ok(&env.capsa(&["volume", "create", "first"]));
    let pid = server_pid(api.socket());
    assert_eq!(journal_readers(pid), 0);
    let mut clients: Vec<std::process::Child> = (0..3)
        .map(|_| {
            std::process::Command::new("curl")
                .args(["-sN", "--unix-socket"])
                .arg(api.socket())
                .arg("http://x/events?since=0&filters=%7B%22type%22%3A%5B%22volume%22%5D%7D")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Each has had the recorded event: its follower is reading.
    for c in &mut clients {
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.contains("\"Action\":\"create\""), "{line}");
    }
    assert_eq!(journal_readers(pid), 3);
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    capsa_tests::eventually(
        "the followers to close the journal",
        std::time::Duration::from_secs(20),
        || journal_readers(pid) == 0,
    );
    ok(&env.capsa(&["volume", "rm", "first"]));
    env.assert_clean();
}

#[test]
fn endpoint_driver_options_and_link_local_addresses_are_kept_at_create_and_refused_on_connect() {
    let env = TestEnv::new();
    let api = env.serve();
    let create = json!({
        "Image": "busybox",
        "Cmd": ["sleep", "60"],
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkingConfig": {"EndpointsConfig": {"bridge": {
            "DriverOpts": {"com.example.setting": "on"},
            "IPAMConfig": {"LinkLocalIPs": ["169.254.8.8"]}
        }}}
    });
    let (status, body) = api.request_json("POST", "/containers/create?name=opts", Some(&create));
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.request_json("POST", "/containers/opts/start", None);
    assert_eq!(status, 204, "{body}");
    let (_, inspect) = api.request_json("GET", "/containers/opts/json", None);
    let bridge = &inspect["NetworkSettings"]["Networks"]["bridge"];
    assert_eq!(
        bridge["DriverOpts"],
        json!({"com.example.setting": "on"}),
        "{bridge}"
    );
    assert_eq!(
        bridge["IPAMConfig"]["LinkLocalIPs"],
        json!(["169.254.8.8"]),
        "{bridge}"
    );
    let addresses = api.docker_ok(&["exec", "opts", "ip", "-4", "addr", "show", "eth0"]);
    assert!(addresses.contains("inet 169.254.8.8/16"), "{addresses}");

    // On connect they would be dropped: refused by name, the container left as it was.
    let (status, body) =
        api.request_json("POST", "/networks/create", Some(&json!({"Name": "side"})));
    assert_eq!(status, 201, "{body}");
    for (config, field) in [
        (json!({"DriverOpts": {"a": "b"}}), "DriverOpts"),
        (
            json!({"IPAMConfig": {"LinkLocalIPs": ["169.254.9.9"]}}),
            "LinkLocalIPs",
        ),
    ] {
        let (status, body) = api.request_json(
            "POST",
            "/networks/side/connect",
            Some(&json!({"Container": "opts", "EndpointConfig": config})),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    let (_, inspect) = api.request_json("GET", "/containers/opts/json", None);
    assert!(
        inspect["NetworkSettings"]["Networks"]["side"].is_null(),
        "{inspect}"
    );
    api.docker_ok(&["rm", "-f", "opts"]);
    api.docker_ok(&["network", "rm", "side"]);
}
