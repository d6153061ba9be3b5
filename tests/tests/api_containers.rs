//! The container endpoints of `capsa serve`, driven by the real docker CLI (create, run -d,
//! ps with filters, inspect, the lifecycle verbs, wait, top, diff, prune) and by raw
//! requests for Docker's status codes and messages; one state with the `capsa` CLI, and
//! containers that outlive a server restart.

use capsa_tests::{eventually, text, TestEnv};
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn the_docker_cli_runs_lists_inspects_and_drives_a_container() {
    let env = TestEnv::new();
    let api = env.serve();
    let id = api.docker_ok(&[
        "run", "-d", "--name", "web", "-e", "A=b", "-l", "k=v", "busybox", "sleep", "300",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    api.docker_ok(&["create", "--name", "later", "busybox", "true"]);

    let names = |args: &[&str]| {
        let mut all = vec!["ps", "--format", "{{.Names}} {{.State}}"];
        all.extend_from_slice(args);
        api.docker_ok(&all).trim().to_string()
    };
    assert_eq!(names(&[]), "web running");
    assert_eq!(
        names(&["-a", "--filter", "status=created"]),
        "later created"
    );
    assert_eq!(names(&["--filter", "label=k=v"]), "web running");
    assert_eq!(names(&["--filter", "label=k=other"]), "");
    assert_eq!(names(&["-a", "--filter", "name=lat"]), "later created");
    assert_eq!(
        names(&["--filter", &format!("id={}", &id[..12])]),
        "web running"
    );
    let all = api.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(all.lines().count(), 2, "{all}");

    let inspected = api.docker_ok(&[
        "inspect",
        "-f",
        "{{.Name}} {{.Config.Labels.k}} {{.State.Running}} {{json .Config.Env}}",
        "web",
    ]);
    assert!(
        inspected.starts_with("/web v true ["),
        "inspect: {inspected}"
    );
    assert!(inspected.contains("\"A=b\""), "{inspected}");
    // One state: the capsa CLI sees what the API made.
    let ps = text(&env.capsa(&["ps", "--format", "{{.Names}}"]).stdout);
    assert_eq!(ps.trim(), "web");

    let state = |name: &str| {
        api.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            name,
        ])
        .trim()
        .to_string()
    };
    api.docker_ok(&["stop", "-t", "1", "web"]);
    assert_eq!(state("web"), "exited 137");
    api.docker_ok(&["start", "web"]);
    assert_eq!(state("web"), "running 0");
    let started = api.docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", "web"]);
    api.docker_ok(&["restart", "-t", "1", "web"]);
    assert_eq!(state("web"), "running 0");
    let restarted = api.docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", "web"]);
    assert_ne!(started, restarted, "restart starts it again");
    api.docker_ok(&["pause", "web"]);
    assert_eq!(state("web"), "paused 0");
    assert_eq!(names(&["--filter", "status=paused"]), "web paused");
    api.docker_ok(&["unpause", "web"]);
    assert_eq!(state("web"), "running 0");
    api.docker_ok(&["rename", "web", "web2"]);
    assert_eq!(names(&[]), "web2 running");
    api.docker_ok(&["kill", "web2"]);
    assert_eq!(state("web2"), "exited 137");
    let again = api.docker(&["kill", "web2"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("is not running"),
        "{}",
        text(&again.stderr)
    );
    let missing = api.docker(&["inspect", "nope"]);
    assert!(
        text(&missing.stderr).contains("No such object: nope")
            || text(&missing.stderr).contains("No such container: nope"),
        "{}",
        text(&missing.stderr)
    );
    api.docker_ok(&["rm", "-f", "web2", "later"]);
    assert_eq!(api.docker_ok(&["ps", "-aq"]).trim(), "");
    env.assert_clean();
}

#[test]
fn wait_top_diff_and_prune_show_what_dockerd_shows() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&[
        "run", "-d", "--name", "three", "busybox", "sh", "-c", "exit 3",
    ]);
    assert_eq!(api.docker_ok(&["wait", "three"]).trim(), "3");
    let exited = api.docker_ok(&["ps", "-a", "--filter", "exited=3", "--format", "{{.Names}}"]);
    assert_eq!(exited.trim(), "three");
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "top",
        "busybox",
        "sh",
        "-c",
        "echo x > /new; exec sleep 300",
    ]);
    let top = api.docker_ok(&["top", "top"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    assert!(top.contains("sleep 300"), "{top}");
    eventually(
        "the new file shows in docker diff",
        Duration::from_secs(10),
        || {
            api.docker_ok(&["diff", "top"])
                .lines()
                .any(|l| l == "A /new")
        },
    );
    let ps_args = api.docker_ok(&["top", "top", "-o", "pid,comm"]);
    assert!(
        ps_args.lines().next().unwrap().contains("COMMAND"),
        "{ps_args}"
    );

    let pruned = api.docker_ok(&["container", "prune", "-f"]);
    let three = api.docker_ok(&["ps", "-aq", "--no-trunc", "--filter", "name=top"]);
    assert!(
        !pruned.contains(three.trim()),
        "a running one is kept: {pruned}"
    );
    assert_eq!(
        api.docker_ok(&["ps", "-a", "--format", "{{.Names}}"])
            .trim(),
        "top",
        "the exited one is gone: {pruned}"
    );
    api.docker_ok(&["rm", "-f", "top"]);
    env.assert_clean();
}

#[test]
fn host_config_reaches_the_container_and_its_listings() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "limited",
        "-p",
        "127.0.0.1:18080:80",
        "-v",
        "vol1:/data",
        "--tmpfs",
        "/scratch",
        "--restart",
        "on-failure:2",
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "--read-only",
        "--hostname",
        "limhost",
        "busybox",
        "sleep",
        "300",
    ]);
    let port = api.docker_ok(&["port", "limited"]);
    assert_eq!(port.trim(), "80/tcp -> 127.0.0.1:18080");
    let ports = api.docker_ok(&["ps", "--format", "{{.Ports}}"]);
    assert_eq!(ports.trim(), "127.0.0.1:18080->80/tcp");
    let host = api.docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} \
         {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.RestartPolicy.Name}} \
         {{.HostConfig.RestartPolicy.MaximumRetryCount}} {{.Config.Hostname}}",
        "limited",
    ]);
    assert_eq!(
        host.split_whitespace().collect::<Vec<_>>(),
        [
            "67108864",
            "500000000",
            "50",
            "true",
            "on-failure",
            "2",
            "limhost"
        ]
    );
    let names = |filter: &str| {
        api.docker_ok(&["ps", "-a", "--format", "{{.Names}}", "--filter", filter])
            .trim()
            .to_string()
    };
    assert_eq!(names("volume=vol1"), "limited");
    assert_eq!(names("volume=/data"), "limited");
    assert_eq!(names("network=bridge"), "limited");
    assert_eq!(names("ancestor=busybox"), "limited");
    assert_eq!(names("network=none"), "");
    // The workload sees its mounts and read-only root (through the capsa CLI's exec).
    let seen = env.capsa(&[
        "exec", "limited", "sh", "-c",
        "touch /data/ok && touch /scratch/ok && echo writable; touch /nope 2>/dev/null || echo read-only",
    ]);
    assert_eq!(
        text(&seen.stdout),
        "writable\nread-only\n",
        "{}",
        text(&seen.stderr)
    );
    // The docker CLI sends a seccomp profile's text; it applies.
    let profile = env.root().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let seccomp = format!("seccomp={}", profile.display());
    for (name, opt, code) in [
        ("confined", seccomp.as_str(), "1"),
        ("free", "no-new-privileges", "0"),
    ] {
        api.docker_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--security-opt",
            opt,
            "busybox",
            "mkdir",
            "/made",
        ]);
        assert_eq!(api.docker_ok(&["wait", name]).trim(), code, "{name}");
    }
    // -P publishes what --expose adds, on a free host port.
    api.docker_ok(&[
        "run", "-d", "--name", "all", "-P", "--expose", "81", "busybox", "sleep", "300",
    ]);
    let port = api.docker_ok(&["port", "all"]);
    assert!(port.starts_with("81/tcp -> 0.0.0.0:"), "{port}");
    api.docker_ok(&["rm", "-f", "limited", "confined", "free", "all"]);
    let out = env.capsa(&["volume", "rm", "vol1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    env.assert_clean();
}

#[test]
fn endpoint_settings_give_aliases_and_an_address_on_a_user_network() {
    let env = TestEnv::new();
    let api = env.serve();
    let out = env.capsa(&["network", "create", "appnet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "appnet",
        "--network-alias",
        "database",
        "--ip",
        "10.89.1.50",
        "busybox",
        "sleep",
        "300",
    ]);
    let ip = api.docker_ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.appnet.IPAddress}}",
        "db",
    ]);
    assert_eq!(ip.trim(), "10.89.1.50");
    assert_eq!(
        api.docker_ok(&["ps", "--filter", "network=appnet", "--format", "{{.Names}}"])
            .trim(),
        "db"
    );
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "appnet",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "database",
    ]);
    assert_eq!(api.docker_ok(&["wait", "client"]).trim(), "0");
    api.docker_ok(&["rm", "-f", "db", "client"]);
    let out = env.capsa(&["network", "rm", "appnet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    env.assert_clean();
}

#[test]
fn one_state_with_the_capsa_cli_that_outlives_the_server() {
    let env = TestEnv::new();
    let api = env.serve();
    let out = env.run(&["-d", "--name", "fromcli", "busybox", "sleep", "300"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    api.docker_ok(&["run", "-d", "--name", "fromapi", "busybox", "sleep", "300"]);
    let listed = api.docker_ok(&["ps", "--format", "{{.Names}}"]);
    assert!(listed.lines().any(|l| l == "fromcli"), "{listed}");
    let ps = text(&env.capsa(&["ps", "--format", "{{.Names}}"]).stdout);
    assert!(ps.lines().any(|l| l == "fromapi"), "{ps}");
    // The server goes and comes back; the container it made runs on.
    drop(api);
    let api = env.serve();
    let running = api.docker_ok(&["inspect", "-f", "{{.State.Running}}", "fromapi"]);
    assert_eq!(running.trim(), "true");
    api.docker_ok(&["rm", "-f", "fromapi", "fromcli"]);
    env.assert_clean();
}

#[test]
fn raw_requests_get_dockers_status_codes_and_words() {
    let env = TestEnv::new();
    let api = env.serve();
    let (status, body) = api.request("POST", "/v1.50/containers/create", Some(b"{\"Image\":"));
    assert_eq!(status, 400, "{}", text(&body));
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create",
        Some(&json!({"Image": "busybox", "HostConfig": {"Memory": "lots"}})),
    );
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("HostConfig.Memory"),
        "{body}"
    );
    // A seccomp profile comes as its JSON: a path on the server's host is never opened
    // (a FIFO there hung the server; /dev/zero has no end).
    for path in ["/dev/zero", "/etc/shadow"] {
        let opt = format!("seccomp={path}");
        let (status, body) = api.request_json(
            "POST",
            "/v1.50/containers/create",
            Some(&json!({"Image": "busybox", "HostConfig": {"SecurityOpt": [opt]}})),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("give the seccomp profile's JSON itself"),
            "{body}"
        );
    }
    // A body that does not say it is JSON is refused, as dockerd refuses it: a web page can
    // send text/plain or a form to a TCP socket without asking first.
    for content_type in ["text/plain", "application/x-www-form-urlencoded", ""] {
        use std::io::{Read, Write};
        let body = r#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#;
        let header = if content_type.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {content_type}\r\n")
        };
        let mut s = std::os::unix::net::UnixStream::connect(api.socket()).unwrap();
        write!(
            s,
            "POST /v1.50/containers/create?name=csrf HTTP/1.1\r\nHost: docker\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{content_type}: {answer}"
        );
        assert!(answer.contains("must be 'application/json'"), "{answer}");
    }
    let (status, _) = api.request("GET", "/v1.50/containers/csrf/json", None);
    assert_eq!(status, 404, "no container was made");
    let (status, body) = api.request_json("GET", "/v1.50/containers/nope/json", None);
    assert_eq!(status, 404);
    assert_eq!(body["message"], "No such container: nope");
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create",
        Some(&json!({"Image": "no-such-image:1"})),
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("No such image"),
        "{body}"
    );

    let config = json!({"Image": "busybox", "Cmd": ["sh", "-c", "exit 5"], "Unknown": {"x": 1}});
    let (status, body) =
        api.request_json("POST", "/v1.50/containers/create?name=xx", Some(&config));
    assert_eq!(status, 201, "{body}");
    let id = body["Id"].as_str().unwrap().to_string();
    assert_eq!(body["Warnings"], json!([]));
    let (status, body) =
        api.request_json("POST", "/v1.50/containers/create?name=xx", Some(&config));
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        format!("Conflict. The container name \"/xx\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")
    );

    // `wait` answers its headers before the container starts (the docker CLI's order).
    let waiter = Waiter::send(&api, "xx", "next-exit");
    let (status, _) = api.request("POST", "/v1.50/containers/xx/start", None);
    assert_eq!(status, 204);
    assert_eq!(waiter.answer(), json!({"StatusCode": 5, "Error": null}));

    // Stopped: stop is 304, kill is 409.
    let (status, _) = api.request("POST", "/v1.50/containers/xx/stop", None);
    assert_eq!(status, 304);
    let (status, body) = api.request_json("POST", "/v1.50/containers/xx/kill", None);
    assert_eq!(status, 409);
    assert_eq!(body["message"], format!("Container {id} is not running"));

    // Running: start is 304, removal without force is 409.
    let sleeper = json!({"Image": "busybox", "Cmd": ["sleep", "300"], "Labels": {"tier": "db"}});
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/create?name=sleeper",
        Some(&sleeper),
    );
    assert_eq!(status, 201, "{body}");
    let sid = body["Id"].as_str().unwrap().to_string();
    assert_eq!(
        api.request("POST", "/v1.50/containers/sleeper/start", None)
            .0,
        204
    );
    assert_eq!(
        api.request("POST", "/v1.50/containers/sleeper/start", None)
            .0,
        304
    );
    let (status, body) = api.request_json("DELETE", "/v1.50/containers/sleeper", None);
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        format!("You cannot remove a running container {sid}. Stop the container before attempting removal or force remove")
    );

    let (status, list) = api.request_json("GET", "/v1.50/containers/json?all=1&size=1", None);
    assert_eq!(status, 200);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    let s = rows.iter().find(|r| r["Id"] == sid.as_str()).unwrap();
    assert_eq!(s["Names"], json!(["/sleeper"]));
    assert!(s["Created"].is_u64(), "{s}");
    assert_eq!(s["State"], "running");
    assert!(s["Status"].as_str().unwrap().starts_with("Up "), "{s}");
    assert_eq!(s["Labels"]["tier"], "db");
    assert!(s["SizeRw"].is_u64(), "{s}");
    assert_eq!(s["HostConfig"]["NetworkMode"], "bridge");
    let x = rows.iter().find(|r| r["Id"] == id.as_str()).unwrap();
    assert!(
        x["Status"].as_str().unwrap().starts_with("Exited (5) "),
        "{x}"
    );
    let filters = r#"{"label":["tier=db"]}"#;
    let (_, list) = api.request_json(
        "GET",
        &format!(
            "/v1.50/containers/json?all=1&filters={}",
            urlencode(filters)
        ),
        None,
    );
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    for (filter, expected) in [
        (r#"{"since":["xx"]}"#, &sid),
        (r#"{"before":["sleeper"]}"#, &id),
    ] {
        let (_, list) = api.request_json(
            "GET",
            &format!("/v1.50/containers/json?all=1&filters={}", urlencode(filter)),
            None,
        );
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [expected.as_str()], "{filter}");
    }

    let (status, body) = api.request_json("DELETE", "/v1.50/containers/sleeper?force=1", None);
    assert_eq!(status, 204, "{body}");
    let (status, body) = api.request_json("POST", "/v1.50/containers/prune", None);
    assert_eq!(status, 200);
    assert_eq!(body["ContainersDeleted"], json!([id]));

    // `removed` answers once an auto-removed container is gone.
    let config = json!({"Image": "busybox", "Cmd": ["sh", "-c", "exit 2"], "HostConfig": {"AutoRemove": true}});
    let (status, body) =
        api.request_json("POST", "/v1.50/containers/create?name=gone", Some(&config));
    assert_eq!(status, 201, "{body}");
    let waiter = Waiter::send(&api, "gone", "removed");
    assert_eq!(
        api.request("POST", "/v1.50/containers/gone/start", None).0,
        204
    );
    assert_eq!(waiter.answer()["StatusCode"], 2);
    assert_eq!(
        api.request("GET", "/v1.50/containers/gone/json", None).0,
        404
    );
    env.assert_clean();
}

#[test]
fn docker_py_runs_lists_stops_and_removes_a_container() {
    let env = TestEnv::new();
    let api = env.serve();
    let script = r#"
import docker
c = docker.from_env()
run = c.containers.run("busybox", ["sh", "-c", "exit 7"], detach=True, name="py-exit",
                       labels={"from": "py"}, environment={"K": "v"})
print("wait", run.wait()["StatusCode"])
sleeper = c.containers.run("busybox", "sleep 300", detach=True, name="py-sleep",
                           mem_limit="64m", ports={"80/tcp": None})
sleeper.reload()
print("status", sleeper.status, sleeper.attrs["HostConfig"]["Memory"])
print("listed", sorted(x.name for x in c.containers.list(all=True, filters={"label": "from=py"})))
sleeper.stop(timeout=1)
sleeper.reload()
print("stopped", sleeper.status, sleeper.attrs["State"]["ExitCode"])
try:
    c.containers.get("py-nope")
except docker.errors.NotFound as e:
    print("missing", e.response.status_code)
for x in c.containers.list(all=True):
    x.remove(force=True)
print("left", len(c.containers.list(all=True)))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .env("DOCKER_HOST", api.docker_host())
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "wait 7\nstatus running 67108864\nlisted ['py-exit']\nstopped exited 137\nmissing 404\nleft 0\n",
        "{}\nserver log:\n{}",
        text(&out.stderr),
        api.log()
    );
    env.assert_clean();
}

/// The PID of the process holding the state root's serve lock (the server).
fn server_pid(env: &TestEnv) -> u32 {
    let lock = env.root().join("locks/serve");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == lock))
            })
        })
        .expect("the server holds its lock")
}

/// How many inotify instances process `pid` holds (a waiter holds one while it waits).
fn inotify_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.to_string_lossy().contains("inotify"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_waiter_that_goes_away_leaves_nothing_waiting() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&["run", "-d", "--name", "long", "busybox", "sleep", "300"]);
    let pid = server_pid(&env);
    let before = inotify_count(pid);
    let mut waiter = std::os::unix::net::UnixStream::connect(api.socket()).unwrap();
    waiter
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        waiter,
        "POST /v1.50/containers/long/wait HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    waiter.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Relative counts: something else of the server's may hold an instance for a moment.
    eventually("the server waits", Duration::from_secs(10), || {
        inotify_count(pid) > before
    });
    drop(waiter);
    eventually(
        "the server stops waiting for a client that left",
        Duration::from_secs(10),
        || inotify_count(pid) <= before,
    );
    api.docker_ok(&["rm", "-f", "long"]);
    env.assert_clean();
}

/// A `wait` request whose status line and headers have arrived.
struct Waiter(std::os::unix::net::UnixStream);

impl Waiter {
    /// Sends `wait?condition=` for `name` and reads the head, which must come at once.
    fn send(api: &capsa_tests::api::ApiServer, name: &str, condition: &str) -> Waiter {
        let mut stream = std::os::unix::net::UnixStream::connect(api.socket()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "POST /v1.50/containers/{name}/wait?condition={condition} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1, "the head ends early");
            head.push(byte[0]);
        }
        assert!(text(&head).starts_with("HTTP/1.1 200"), "{}", text(&head));
        Waiter(stream)
    }

    /// The body, once the condition holds.
    fn answer(mut self) -> serde_json::Value {
        let mut rest = Vec::new();
        while !text(&rest).contains('}') {
            let mut chunk = [0u8; 256];
            let n = self.0.read(&mut chunk).unwrap();
            assert!(n > 0, "the body ends early: {}", text(&rest));
            rest.extend_from_slice(&chunk[..n]);
        }
        let rest = text(&rest);
        serde_json::from_str(&rest[rest.find('{').unwrap()..=rest.rfind('}').unwrap()]).unwrap()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn docker_run_isolation_vm_boots_a_microvm() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&[
        "run",
        "-d",
        "--isolation",
        "vm",
        "--name",
        "guest",
        "busybox",
        "sh",
        "-c",
        "uname -r; exit 4",
    ]);
    assert_eq!(api.docker_ok(&["wait", "guest"]).trim(), "4");
    let isolation = api.docker_ok(&["inspect", "-f", "{{.Isolation}}", "guest"]);
    assert_eq!(isolation.trim(), "vm");
    api.docker_ok(&["rm", "guest"]);
    env.assert_clean();
}
