//! rt1 #6: a container's CPU limit also bounds the work its output makes outside it. A
//! detached container's monitor (and a VM's) relays its output from a cgroup of its own
//! beside the container's, `<parent>/<id>-monitor`, with the container's CPU quota; a VM's
//! engine cgroup has the quota of `--cpus` too. `capsa run -d --cpus 0.1 busybox yes` had
//! its monitor burn a whole core (one json-file record per 2-byte line) while the container
//! stayed within 0.1 CPU.

use capsa_tests::{eventually, text, TestEnv};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn unified() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// The directory of cgroup `name` under the test's parent in the hierarchy that holds the
/// CPU controller.
fn cpu_dir(env: &TestEnv, name: &str) -> PathBuf {
    let rel = env.cgroup_parent().trim_start_matches('/');
    let base = if unified() {
        PathBuf::from(CGROUP_ROOT)
    } else {
        Path::new(CGROUP_ROOT).join("cpu")
    };
    base.join(rel).join(name)
}

/// The CPU quota of a cgroup in microseconds per 100 ms period; None when unlimited.
fn cpu_quota(dir: &Path) -> Option<u64> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()))
    };
    let (quota, period) = if unified() {
        let max = read("cpu.max");
        let mut f = max.split_whitespace();
        (f.next().unwrap().to_string(), f.next().unwrap().to_string())
    } else {
        (
            read("cpu.cfs_quota_us").trim().to_string(),
            read("cpu.cfs_period_us").trim().to_string(),
        )
    };
    assert_eq!(period, "100000", "{}", dir.display());
    quota.parse().ok().filter(|q: &u64| *q > 0)
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// (full ID, monitor PID) of container `name`, from its record.
fn id_and_monitor(env: &TestEnv, name: &str) -> (String, i32) {
    let id = env.inspect(name, "{{.Id}}");
    let state = std::fs::read(env.root().join("containers").join(&id).join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    let monitor = state["monitor_pid"].as_i64().expect("a monitor pid") as i32;
    (id, monitor)
}

/// Checks the monitor's cgroup of running container `name`: beside the container's, with
/// `quota`, holding the monitor process; and that `rm -f` leaves nothing.
fn check_and_remove(env: &TestEnv, name: &str, quota: Option<u64>) {
    let (id, monitor) = id_and_monitor(env, name);
    let container = cpu_dir(env, &id);
    let beside = cpu_dir(env, &format!("{id}-monitor"));
    assert!(container.is_dir(), "{}", container.display());
    // A VM container's cgroup is its engine's: its quota is --cpus as well.
    assert_eq!(cpu_quota(&container), quota, "the container's own");
    assert_eq!(cpu_quota(&beside), quota, "{}", beside.display());
    assert!(
        procs(&beside).contains(&monitor),
        "monitor {monitor} not in {}",
        beside.display()
    );
    assert!(!procs(&container).contains(&monitor));
    let out = env.capsa(&["rm", "-f", name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!beside.exists(), "{} left", beside.display());
    env.assert_clean();
}

#[test]
fn a_containers_monitor_runs_in_a_cgroup_with_the_containers_cpu_quota() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "limited",
        "--network",
        "none",
        "--cpus",
        "0.5",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    check_and_remove(&env, "limited", Some(50_000));
    // No quota for the container, none for its monitor; the cgroup is there all the same.
    let out = env.run(&[
        "-d",
        "--name",
        "free",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    check_and_remove(&env, "free", None);
}

/// The quota bites where it matters: a container printing as fast as its 0.1 CPU lets it
/// gets its monitor throttled, and the monitor's cgroup goes when the container ends.
#[test]
fn a_flood_of_output_throttles_the_monitor() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "flood",
        "--network",
        "none",
        "--cpus",
        "0.1",
        "--log-opt",
        "max-size=1m",
        "busybox",
        "yes",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (id, _) = id_and_monitor(&env, "flood");
    let beside = cpu_dir(&env, &format!("{id}-monitor"));
    let throttled = || {
        let stat = std::fs::read_to_string(beside.join("cpu.stat")).unwrap_or_default();
        stat.lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    eventually(
        "the monitor throttled by its quota",
        Duration::from_secs(30),
        || throttled() > 0,
    );
    // Its output is logged all the same (the log rotates at 1 MB: it may be empty a moment).
    eventually("the output logged", Duration::from_secs(30), || {
        text(&env.capsa(&["logs", "--tail", "3", "flood"]).stdout).starts_with("y\ny\n")
    });
    let out = env.capsa(&["stop", "-t", "0", "flood"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Stopped, its monitor has left and removed its cgroup; `rm` leaves nothing else.
    eventually(
        "the monitor's cgroup removed",
        Duration::from_secs(30),
        || !beside.exists(),
    );
    assert!(env.capsa(&["rm", "flood"]).status.success());
    env.assert_clean();
}

/// `--rm`: the monitor removes its own container, and with it its cgroup.
#[test]
fn a_monitor_removing_its_container_removes_its_cgroup() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--rm",
        "--name",
        "gone",
        "--network",
        "none",
        "--cpus",
        "0.5",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (id, monitor) = id_and_monitor(&env, "gone");
    let beside = cpu_dir(&env, &format!("{id}-monitor"));
    assert!(procs(&beside).contains(&monitor));
    let out = env.capsa(&["stop", "-t", "0", "gone"]);
    // `stop` may find the container already removed by its monitor (a race of its own).
    let err = text(&out.stderr);
    assert!(
        out.status.success() || err.contains("No such container"),
        "{err}"
    );
    eventually("the container removed", Duration::from_secs(30), || {
        env.container_dirs().is_empty()
    });
    eventually("its cgroups removed", Duration::from_secs(30), || {
        env.leftover_cgroups().is_empty()
    });
    env.assert_clean();
}

#[test]
fn a_vms_engine_and_monitor_have_its_cpu_quota() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--isolation",
        "vm",
        "--name",
        "vmq",
        "--network",
        "none",
        "--cpus",
        "0.5",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A VM container's cgroup is its engine's.
    check_and_remove(&env, "vmq", Some(50_000));
}
