//! capsa-runc behind containerd's CRI plugin, driven as the kubelet drives it: a containerd
//! of the test's own (in the test's network namespace, CNI bridge there) with a runtime
//! handler `capsa` on the runc v2 shim, spoken to over CRI v1 (`k8s-cri` on tonic): pods
//! run with `runtime_handler = "capsa"`, images pulled from a local registry, containers
//! created, started, exec'd into, stopped; their logs where the kubelet reads them; and
//! after the pod is removed, nothing left: no process, runtime record, mount, cgroup,
//! network namespace or veth.

mod cri_support;

use capsa_tests::{eventually, TestEnv};
use cri_support::{cgroup_dirs, CriContainerd, Images, BOUND, BRIDGE};
use k8s_cri::v1::{
    Capability, ContainerState, Int64Value, LinuxContainerResources, NamespaceMode,
    PodSandboxConfig, PodSandboxState, VersionRequest,
};
use std::path::PathBuf;
use std::process::Command;

/// What a pod left that must be gone once it is removed.
struct Traces {
    pids: Vec<i32>,
    netns: PathBuf,
}

/// The sandbox's PID and network namespace path, from PodSandboxStatus's verbose info.
fn pod_traces(ctd: &CriContainerd, pod: &str, handler: &str) -> Traces {
    let status = ctd.pod_status(pod);
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).unwrap();
    assert_eq!(info["runtimeHandler"], handler, "{info}");
    let netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .expect("the pod's network namespace path")
        .into();
    Traces {
        pids: vec![info["pid"].as_i64().expect("sandbox pid") as i32],
        netns,
    }
}

/// The init PID of a running container, from ContainerStatus's verbose info.
fn container_pid(ctd: &CriContainerd, id: &str) -> i32 {
    let status = ctd.container_status(id);
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).unwrap();
    info["pid"].as_i64().expect("container pid") as i32
}

/// The lines of a container's CRI log file: (stream, tag, message), each line checked to
/// be `<RFC 3339 time> <stream> <F|P> <message>`.
fn log_lines(
    ctd: &CriContainerd,
    config: &PodSandboxConfig,
    name: &str,
) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(ctd.log_file(config, name)).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (time, stream, tag) = (parts.next().unwrap(), parts.next(), parts.next());
            assert!(
                time.len() > 20 && time.as_bytes()[10] == b'T' && time.contains(':'),
                "CRI log line without a time: {l:?}"
            );
            (
                stream.unwrap_or_default().to_string(),
                tag.unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn logged(
    ctd: &CriContainerd,
    config: &PodSandboxConfig,
    name: &str,
    stream: &str,
    msg: &str,
) -> bool {
    log_lines(ctd, config, name)
        .iter()
        .any(|(s, t, m)| s == stream && t == "F" && m == msg)
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Processes other than containerd whose command line names the test's directory (shims,
/// capsa-runc, a container's init started from its bundle, a VM pod's keeper or engine).
/// A VM template's RAM holder is not a pod's: it serves every VM restored from its
/// template on the node, and ends when its template's folder goes.
fn processes_naming(dir: &str, except: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != except && *pid != std::process::id())
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains(dir) && !cmd.contains("__vm-template-ram"))
                .then(|| format!("{pid}: {cmd}"))
        })
        .collect()
}

/// Cgroup directories below the pods' own (the containers'), in every hierarchy.
fn container_cgroups(ctd: &CriContainerd) -> Vec<PathBuf> {
    let subdirs = |d: &PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    cgroup_dirs(&ctd.cgroup_root)
        .iter()
        .flat_map(subdirs)
        .flat_map(|pod| subdirs(&pod))
        .collect()
}

/// Network interfaces in the test's namespace other than lo and the CNI bridge.
fn veths(env: &TestEnv) -> Vec<String> {
    let out = env
        .host_command("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n != "lo" && n != BRIDGE)
        .collect()
}

/// The records capsa-runc keeps for the shim of `handler` (its `--root`).
fn runtime_records(ctd: &CriContainerd, handler: &str) -> Vec<String> {
    std::fs::read_dir(ctd.runtime_root(handler).join("k8s.io"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// capsa-runc's `state` of `id` under the shim's root.
fn runtime_status(ctd: &CriContainerd, id: &str) -> String {
    let out = Command::new(ctd.capsa_runc())
        .arg("--root")
        .arg(ctd.runtime_root("capsa").join("k8s.io"))
        .args(["state", id])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    state["status"].as_str().unwrap_or_default().to_string()
}

/// After StopPodSandbox and RemovePodSandbox: nothing of the pod is left anywhere.
fn assert_nothing_left(env: &TestEnv, ctd: &CriContainerd, traces: &Traces, daemon_pid: u32) {
    assert_nothing_left_by(env, ctd, traces, daemon_pid, "capsa")
}

/// [`assert_nothing_left`] for the pods of `handler`.
fn assert_nothing_left_by(
    env: &TestEnv,
    ctd: &CriContainerd,
    traces: &Traces,
    daemon_pid: u32,
    handler: &str,
) {
    assert!(ctd.pods().is_empty(), "pods left: {:?}", ctd.pods());
    assert!(
        ctd.containers().is_empty(),
        "containers left: {:?}",
        ctd.containers()
    );
    let dir = ctd.dir.path().to_string_lossy().to_string();
    eventually("the shims exit", BOUND, || {
        processes_naming(&dir, daemon_pid).is_empty()
    });
    for pid in &traces.pids {
        assert!(!alive(*pid), "process {pid} of the pod is alive");
    }
    assert!(
        runtime_records(ctd, handler).is_empty(),
        "capsa-runc records left: {:?}",
        runtime_records(ctd, handler)
    );
    let netns = traces.netns.to_string_lossy().to_string();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir) || l.contains(&netns))
        .map(String::from)
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    assert!(
        !traces.netns.exists(),
        "the pod's network namespace {netns} is left"
    );
    assert!(
        container_cgroups(ctd).is_empty(),
        "cgroups left: {:?}",
        container_cgroups(ctd)
    );
    // The kernel removes a veth with its namespace, after the last process in it exited.
    eventually("the pod's veth goes", BOUND, || veths(env).is_empty());
}

const WAITS_FOR_TERM: &str = "trap 'echo got-term; exit 7' TERM; echo started; sleep 1000 & wait";

#[test]
fn a_pod_runs_through_cri_with_the_capsa_handler_and_leaves_nothing() {
    let env = TestEnv::new();
    let images = Images::push(&env);
    let ctd = CriContainerd::start(&env, &images);
    let daemon_pid = ctd.daemon_pid();

    let mut c = ctd.runtime.clone();
    let version = ctd
        .call(c.version(VersionRequest {
            version: "v1".into(),
        }))
        .expect("Version");
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");

    let config = ctd.pod_config("web");
    let pod = ctd
        .run_pod(&config, "capsa")
        .expect("RunPodSandbox with handler capsa");
    let mut traces = pod_traces(&ctd, &pod, "capsa");
    let status = ctd.pod_status(&pod).status.unwrap();
    assert_eq!(status.state(), PodSandboxState::SandboxReady);
    let pod_ip = status.network.expect("the pod's network").ip;
    assert!(
        pod_ip.starts_with("10.213.0."),
        "pod IP {pod_ip:?} from the CNI bridge's range"
    );
    assert_eq!(
        runtime_status(&ctd, &pod),
        "running",
        "capsa-runc runs the sandbox"
    );

    let image = images.busybox();
    let image_ref = ctd.pull(&image, &config);
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");

    let main = ctd.create_container(&pod, &config, "main", &image, &["sh", "-c", WAITS_FOR_TERM]);
    assert_eq!(
        ctd.container_state(&main).0,
        ContainerState::ContainerCreated
    );
    ctd.start_container(&main);
    eventually("main's first line in its CRI log", BOUND, || {
        logged(&ctd, &config, "main", "stdout", "started")
    });
    assert_eq!(
        ctd.container_state(&main).0,
        ContainerState::ContainerRunning
    );
    assert_eq!(
        runtime_status(&ctd, &main),
        "running",
        "capsa-runc runs the container"
    );
    traces.pids.push(container_pid(&ctd, &main));
    // What the checks at the end look for is there while the pod runs.
    assert!(
        !container_cgroups(&ctd).is_empty(),
        "the containers' cgroups"
    );
    assert!(!veths(&env).is_empty(), "the pod's veth on the bridge");
    assert!(traces.netns.exists(), "the pod's network namespace");

    // ExecSync: both streams and the exit status, in the container's namespaces.
    let (out, err, code) = ctd.exec_sync(&main, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 3));
    // What the pod's config asked for, seen from inside: hostname, DNS, the namespaced
    // sysctl, the RuntimeDefault seccomp filter, the pod's /dev/shm, the CNI address.
    let (out, _, code) = ctd.exec_sync(
        &main,
        &[
            "sh",
            "-c",
            "hostname; cat /etc/resolv.conf; \
             echo sysctl=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); \
             grep '^Seccomp:' /proc/self/status; grep ' /dev/shm ' /proc/mounts; \
             echo timer_list=$(wc -c < /proc/timer_list); \
             echo 1 2>/dev/null > /proc/sys/net/ipv4/ip_unprivileged_port_start || echo sys-readonly; \
             ip -o -4 addr show eth0",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().next(), Some("web"), "hostname: {out}");
    assert!(out.contains("nameserver 10.213.0.53"), "resolv.conf: {out}");
    assert!(
        out.contains("search default.svc.cluster.local"),
        "resolv.conf: {out}"
    );
    assert!(out.contains("sysctl=0\n"), "the pod's sysctl: {out}");
    assert!(
        out.contains(" /dev/shm tmpfs "),
        "the pod's /dev/shm: {out}"
    );
    assert!(out.contains("Seccomp:\t2"), "a seccomp filter: {out}");
    assert!(
        out.contains(&format!("inet {pod_ip}/")),
        "the pod's address: {out}"
    );

    // Exec as `kubectl exec` streams it (CRI Exec, then WebSocket to containerd's
    // streaming server): both streams and the status; stdin (`-i`); a terminal (`-t`),
    // which is a pty of the container's own given through the shim's console socket.
    let streamed = ctd.exec_streaming(
        &main,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        None,
    );
    assert_eq!(
        (
            streamed.stdout.as_str(),
            streamed.stderr.as_str(),
            streamed.code
        ),
        ("out\n", "err\n", 3)
    );
    let streamed = ctd.exec_streaming(
        &main,
        &["sh", "-c", "read line; echo got:$line"],
        false,
        Some(b"hello\n"),
    );
    assert_eq!(
        (streamed.stdout.as_str(), streamed.code),
        ("got:hello\n", 0)
    );
    // The command first waits for its input: containerd 1.6 drops what a terminal exec
    // writes before its shim has the pty (with runc as with capsa-runc, about one short
    // exec in two here), and the input reaches the command only once the shim copies.
    let streamed = ctd.exec_streaming(
        &main,
        &[
            "sh",
            "-c",
            "read x; tty; test -t 0 && test -t 1 && echo both-terminal; exit 4",
        ],
        true,
        Some(b"go\n"),
    );
    assert_eq!(streamed.code, 4, "{streamed:?}");
    assert!(
        streamed.stdout.contains("\n/dev/pts/"),
        "a pty inside the container: {streamed:?}"
    );
    assert!(streamed.stdout.contains("both-terminal"), "{streamed:?}");

    // A container that ends on its own: exited with its status, its streams in the log.
    let once = ctd.create_container(
        &pod,
        &config,
        "once",
        &image,
        &["sh", "-c", "echo bye; echo oops >&2; exit 3"],
    );
    ctd.start_container(&once);
    eventually("once exits", BOUND, || {
        ctd.container_state(&once).0 == ContainerState::ContainerExited
    });
    let (_, exit_code, reason) = ctd.container_state(&once);
    assert_eq!((exit_code, reason.as_str()), (3, "Error"));
    assert!(
        logged(&ctd, &config, "once", "stdout", "bye"),
        "{:?}",
        log_lines(&ctd, &config, "once")
    );
    assert!(
        logged(&ctd, &config, "once", "stderr", "oops"),
        "{:?}",
        log_lines(&ctd, &config, "once")
    );

    // A container killed from outside (the OOM killer, an operator): exited, 128 + 9.
    let victim = ctd.create_container(&pod, &config, "victim", &image, &["sleep", "1000"]);
    ctd.start_container(&victim);
    let victim_pid = container_pid(&ctd, &victim);
    traces.pids.push(victim_pid);
    // SAFETY: kill(2) on the container's init, which the test's containerd started.
    assert_eq!(unsafe { libc::kill(victim_pid, libc::SIGKILL) }, 0);
    eventually("victim exits", BOUND, || {
        ctd.container_state(&victim).0 == ContainerState::ContainerExited
    });
    assert_eq!(ctd.container_state(&victim).1, 137);
    assert_eq!(
        ctd.container_state(&main).0,
        ContainerState::ContainerRunning,
        "the pod's other container runs on"
    );

    // StopContainer: TERM, the workload's own exit status.
    ctd.stop_container(&main, 30);
    let (state, exit_code, _) = ctd.container_state(&main);
    assert_eq!((state, exit_code), (ContainerState::ContainerExited, 7));
    assert!(logged(&ctd, &config, "main", "stdout", "got-term"));

    ctd.stop_pod(&pod).expect("StopPodSandbox");
    let stopped = ctd.pod_status(&pod).status.unwrap();
    assert_eq!(stopped.state(), PodSandboxState::SandboxNotready);
    ctd.remove_pod(&pod).expect("RemovePodSandbox");
    assert_nothing_left(&env, &ctd, &traces, daemon_pid);
}

#[test]
fn two_containers_of_a_pod_share_its_network_namespace() {
    let env = TestEnv::new();
    let images = Images::push(&env);
    let ctd = CriContainerd::start(&env, &images);
    let daemon_pid = ctd.daemon_pid();
    let config = ctd.pod_config("pair");
    let pod = ctd
        .run_pod(&config, "capsa")
        .expect("RunPodSandbox with handler capsa");
    let mut traces = pod_traces(&ctd, &pod, "capsa");
    let image = images.busybox();
    ctd.pull(&image, &config);

    // The server answers one connection on the pod's loopback; the client connects to it
    // (retrying until the server listens: the two start independently).
    let server = ctd.create_container(
        &pod,
        &config,
        "server",
        &image,
        &[
            "sh",
            "-c",
            "echo net=$(readlink /proc/self/ns/net); echo from-server > /dev/shm/mark; \
             echo pong | nc -l -p 7000",
        ],
    );
    ctd.start_container(&server);
    traces.pids.push(container_pid(&ctd, &server));
    let client = ctd.create_container(
        &pod,
        &config,
        "client",
        &image,
        &[
            "sh",
            "-c",
            "i=0; until echo ping | nc 127.0.0.1 7000; do i=$((i+1)); [ $i -lt 600 ] || exit 9; sleep 0.1; done; \
             echo net=$(readlink /proc/self/ns/net); cat /dev/shm/mark",
        ],
    );
    ctd.start_container(&client);
    eventually("both containers exit", BOUND, || {
        [&server, &client]
            .iter()
            .all(|c| ctd.container_state(c).0 == ContainerState::ContainerExited)
    });
    assert_eq!(
        ctd.container_state(&server).1,
        0,
        "server: {:?}",
        log_lines(&ctd, &config, "server")
    );
    assert_eq!(
        ctd.container_state(&client).1,
        0,
        "client: {:?}",
        log_lines(&ctd, &config, "client")
    );
    // Data crossed the pod's loopback. containerd writes the CRI log files from the
    // shim's pipes on its own time, so a last line may land after the exit is reported;
    // and busybox nc may end a side once its own input is done, before printing what the
    // other sent: one of the two words is enough.
    eventually("a word crossed the pod's loopback", BOUND, || {
        logged(&ctd, &config, "server", "stdout", "ping")
            || logged(&ctd, &config, "client", "stdout", "pong")
    });

    // One network namespace (the pod's) and one IPC namespace: the server's /dev/shm file,
    // written before it listened, is the client's.
    // Its last line: once it is in the log, so are the ones before.
    eventually("the client read the server's /dev/shm file", BOUND, || {
        logged(&ctd, &config, "client", "stdout", "from-server")
    });
    let net = |name: &str| -> Vec<String> {
        log_lines(&ctd, &config, name)
            .into_iter()
            .filter(|(_, _, m)| m.starts_with("net="))
            .map(|(_, _, m)| m)
            .collect()
    };
    assert_eq!(
        net("server").len(),
        1,
        "{:?}",
        log_lines(&ctd, &config, "server")
    );
    assert_eq!(net("server"), net("client"), "the same network namespace");

    ctd.stop_pod(&pod).expect("StopPodSandbox");
    ctd.remove_pod(&pod).expect("RemovePodSandbox");
    assert_nothing_left(&env, &ctd, &traces, daemon_pid);
}

/// What the kubelet sends for a container with limits of `memory_mib` MiB and half a CPU.
fn limits(memory_mib: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: memory_mib << 20,
        memory_swap_limit_in_bytes: memory_mib << 20,
        oom_score_adj: 900,
        ..Default::default()
    }
}

/// The text of cgroup file `file` of cgroup `path`, from whichever hierarchy has it.
fn cgroup_text(path: &str, file: &str) -> Option<String> {
    cgroup_dirs(path)
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
}

/// The number in the first of `files` that cgroup `path` has.
fn cgroup_value(path: &str, files: &[&str]) -> Option<i64> {
    files
        .iter()
        .find_map(|f| cgroup_text(path, f))
        .and_then(|t| t.trim().parse().ok())
}

/// A pod as the restricted Pod Security Standard makes it, with `shareProcessNamespace`:
/// the containers join the sandbox's PID namespace by path; non-root, no capabilities, no
/// new privileges, a read-only root.
#[test]
fn a_restricted_pod_sharing_its_process_namespace() {
    let env = TestEnv::new();
    let images = Images::push(&env);
    let ctd = CriContainerd::start(&env, &images);
    let daemon_pid = ctd.daemon_pid();
    let mut config = ctd.pod_config("locked");
    let namespaces = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap();
    namespaces.pid = NamespaceMode::Pod as i32;
    let pod = ctd
        .run_pod(&config, "capsa")
        .expect("RunPodSandbox with handler capsa");
    let mut traces = pod_traces(&ctd, &pod, "capsa");
    let image = images.busybox();
    ctd.pull(&image, &config);
    let app = ctd.create_container_with(
        &pod,
        &config,
        "app",
        &image,
        &["sh", "-c", WAITS_FOR_TERM],
        |linux| {
            linux.resources = Some(limits(64));
            let s = linux.security_context.as_mut().unwrap();
            s.run_as_user = Some(Int64Value { value: 1000 });
            s.run_as_group = Some(Int64Value { value: 1000 });
            s.readonly_rootfs = true;
            s.no_new_privs = true;
            s.capabilities = Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            });
        },
    );
    ctd.start_container(&app);
    eventually("app's first line in its CRI log", BOUND, || {
        logged(&ctd, &config, "app", "stdout", "started")
    });
    traces.pids.push(container_pid(&ctd, &app));
    let (out, err, code) = ctd.exec_sync(
        &app,
        &[
            "sh",
            "-c",
            "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status; \
             touch /rootfile 2>/dev/null || echo root-readonly; \
             echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline)",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], &["1000", "1000"], "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
    // Dropped from the bounding set too: not even a set-uid binary regains one.
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("root-readonly\n"), "{out}");
    // PID 1 of the shared namespace is the sandbox's pause process.
    assert!(out.contains("pid1=sh -c trap 'exit 0' TERM"), "{out}");

    // The limits the kubelet sent are the container's cgroup's; a resize changes them.
    let pod_cgroup = format!("{}/poduid-locked/{app}", ctd.cgroup_root);
    let memory_limit = || cgroup_value(&pod_cgroup, &["memory.limit_in_bytes", "memory.max"]);
    assert_eq!(memory_limit(), Some(64 << 20));
    assert_eq!(
        cgroup_value(&pod_cgroup, &["cpu.cfs_quota_us"]).or_else(|| {
            cgroup_text(&pod_cgroup, "cpu.max")
                .and_then(|t| t.split_whitespace().next()?.parse().ok())
        }),
        Some(50_000)
    );
    let adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", traces.pids[1])).unwrap();
    assert_eq!(
        adj.trim(),
        "900",
        "the kubelet's OOM score for the container"
    );
    ctd.update_resources(&app, limits(128));
    assert_eq!(memory_limit(), Some(128 << 20));

    ctd.stop_container(&app, 30);
    assert_eq!(
        ctd.container_state(&app),
        (ContainerState::ContainerExited, 7, "Error".to_string())
    );
    ctd.stop_pod(&pod).expect("StopPodSandbox");
    ctd.remove_pod(&pod).expect("RemovePodSandbox");
    assert_nothing_left(&env, &ctd, &traces, daemon_pid);
}

/// The host's kernel release, which a container in a VM does not share.
fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_pod_is_one_vm_with_the_capsa_vm_handler_and_leaves_nothing() {
    let env = TestEnv::new();
    let images = Images::push(&env);
    let ctd = CriContainerd::start(&env, &images);
    let daemon_pid = ctd.daemon_pid();
    let config = ctd.pod_config("vmpod");
    let pod = ctd
        .run_pod(&config, "capsa-vm")
        .expect("RunPodSandbox with handler capsa-vm");
    let mut traces = pod_traces(&ctd, &pod, "capsa-vm");
    let status = ctd.pod_status(&pod).status.unwrap();
    assert_eq!(status.state(), PodSandboxState::SandboxReady);
    let pod_ip = status.network.expect("the pod's network").ip;
    let image = images.busybox();
    ctd.pull(&image, &config);

    // Two containers in the pod's one guest: their kernel is the guest's, they share its
    // network (the pod's address on eth0, one loopback), each has its own root.
    let main = ctd.create_container(
        &pod,
        &config,
        "main",
        &image,
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo kernel=$(uname -r); \
             ip -o -4 addr show eth0; echo mine > /only-main; \
             (echo pong | nc -l -p 7000 &); echo started; sleep 1000 & wait",
        ],
    );
    ctd.start_container(&main);
    eventually("main's first lines in its CRI log", BOUND, || {
        logged(&ctd, &config, "main", "stdout", "started")
    });
    traces.pids.push(container_pid(&ctd, &main));
    let peer = ctd.create_container(
        &pod,
        &config,
        "peer",
        &image,
        &[
            "sh",
            "-c",
            "i=0; until echo ping | nc 127.0.0.1 7000; do i=$((i+1)); [ $i -lt 600 ] || exit 9; sleep 0.1; done; \
             echo kernel=$(uname -r); test -e /only-main && echo shared-root; exit 0",
        ],
    );
    ctd.start_container(&peer);
    eventually("peer exits", BOUND, || {
        ctd.container_state(&peer).0 == ContainerState::ContainerExited
    });
    assert_eq!(
        ctd.container_state(&peer).1,
        0,
        "peer: {:?}",
        log_lines(&ctd, &config, "peer")
    );
    let has_line = |name: &str, part: &str| {
        log_lines(&ctd, &config, name)
            .iter()
            .any(|(_, _, m)| m.contains(part))
    };
    eventually("peer's kernel line", BOUND, || has_line("peer", "kernel="));
    let kernel = |name: &str| -> Vec<String> {
        log_lines(&ctd, &config, name)
            .into_iter()
            .filter(|(_, _, m)| m.starts_with("kernel="))
            .map(|(_, _, m)| m)
            .collect()
    };
    assert_eq!(kernel("main"), kernel("peer"), "one guest kernel");
    assert_ne!(
        kernel("main"),
        vec![format!("kernel={}", host_kernel())],
        "the guest's, not the host's"
    );
    assert!(
        has_line("main", &format!("inet {pod_ip}/")),
        "the pod's address is the guest's: {:?}",
        log_lines(&ctd, &config, "main")
    );
    assert!(
        !has_line("peer", "shared-root"),
        "each container has its own root"
    );

    // ExecSync in the guest: both streams and the status.
    let (out, err, code) = ctd.exec_sync(&main, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 3));
    let (out, _, _) = ctd.exec_sync(&main, &["cat", "/only-main"]);
    assert_eq!(out, "mine\n");
    // `kubectl exec -it`: a pty in the guest, through the shim's console socket; typed
    // input reaches the command.
    let streamed = ctd.exec_streaming(
        &main,
        &[
            "sh",
            "-c",
            "read x; tty; test -t 0 && test -t 1 && echo both-terminal:$x; exit 4",
        ],
        true,
        Some(b"go\n"),
    );
    assert_eq!(streamed.code, 4, "{streamed:?}");
    assert!(streamed.stdout.contains("/dev/pts/"), "{streamed:?}");
    assert!(streamed.stdout.contains("both-terminal:go"), "{streamed:?}");

    // A container killed (StopContainer with no grace: SIGKILL in the guest): exited, 137;
    // the pod's other container runs on.
    let victim = ctd.create_container(&pod, &config, "victim", &image, &["sleep", "1000"]);
    ctd.start_container(&victim);
    traces.pids.push(container_pid(&ctd, &victim));
    ctd.stop_container(&victim, 0);
    assert_eq!(ctd.container_state(&victim).1, 137);
    assert_eq!(
        ctd.container_state(&main).0,
        ContainerState::ContainerRunning
    );
    // StopContainer: TERM, the workload's own exit status.
    ctd.stop_container(&main, 30);
    let (state, exit_code, _) = ctd.container_state(&main);
    assert_eq!((state, exit_code), (ContainerState::ContainerExited, 7));
    assert!(logged(&ctd, &config, "main", "stdout", "got-term"));

    ctd.stop_pod(&pod).expect("StopPodSandbox");
    ctd.remove_pod(&pod).expect("RemovePodSandbox");
    assert_nothing_left_by(&env, &ctd, &traces, daemon_pid, "capsa-vm");
}
