//! Benchmark (not a test): CRI RunPodSandbox + PullImage (cached) + CreateContainer +
//! StartContainer to the container's first line in its CRI log file, with the runtime
//! handlers `capsa` (capsa-runc), `capsa-vm` (a pod per VM) and `runc`, interleaved,
//! through a containerd of its own set up as the CRI tests set it up (tests/cri_support);
//! and the host memory of each running pod: the PSS of every process under its shims
//! (the runtime's processes: inits, or a VM's keeper, engine and followers), and of the
//! shims themselves.
//!
//!     cargo build -p capsa --bins
//!     cargo run -p capsa-tests --example cri_bench -- [ROUNDS] [HANDLER,HANDLER...]
//!
//! Prints one line per handler: median, p10, p90, min and max in milliseconds, and the
//! median PSS per pod.

#[path = "../tests/cri_support/mod.rs"]
mod cri_support;

use capsa_tests::TestEnv;
use cri_support::{CriContainerd, Images};
use std::time::{Duration, Instant};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let env = TestEnv::new();
    let images = Images::push(&env);
    let ctd = CriContainerd::start(&env, &images);
    let image = images.busybox();
    // The images are pulled once beforehand, as a node that ran the pod before has them.
    let warm = ctd.pod_config("warm");
    ctd.pull(&image, &warm);
    ctd.pull(&images.pause(), &warm);
    let handlers: Vec<String> = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "capsa,runc".into())
        .split(',')
        .map(String::from)
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); handlers.len()];
    let mut memory: Vec<Vec<(u64, u64)>> = vec![Vec::new(); handlers.len()];
    // One untimed round per handler first (page cache, the shim binary).
    for round in 0..=rounds {
        for (h, handler) in handlers.iter().enumerate() {
            let (took, pss) = first_output(&ctd, &image, &format!("p{round}{handler}"), handler);
            if round > 0 {
                times[h].push(took);
                memory[h].push(pss);
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "rounds {rounds}, interleaved; load average before the summary: {}",
        load.trim()
    );
    for (h, handler) in handlers.iter().enumerate() {
        let mut t = times[h].clone();
        t.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: usize| ms(t[(t.len() - 1) * q / 100]);
        let mut runtime: Vec<u64> = memory[h].iter().map(|m| m.0).collect();
        let mut shims: Vec<u64> = memory[h].iter().map(|m| m.1).collect();
        runtime.sort();
        shims.sort();
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "{handler:>8}: median {:.1} ms (p10 {:.1}, p90 {:.1}; min {:.1}, max {:.1}); \
             PSS per pod: runtime's processes {:.1} MiB, shims {:.1} MiB (medians)",
            at(50),
            at(10),
            at(90),
            ms(t[0]),
            ms(t[t.len() - 1]),
            mib(runtime[runtime.len() / 2]),
            mib(shims[shims.len() / 2])
        );
    }
}

/// One pod with `handler`: the time from RunPodSandbox to the container's first log line,
/// and the pod's host memory once its container runs (PSS in KiB: the processes under its
/// shims, the shims); the pod is removed afterwards (not timed).
fn first_output(
    ctd: &CriContainerd,
    image: &str,
    name: &str,
    handler: &str,
) -> (Duration, (u64, u64)) {
    let config = ctd.pod_config(name);
    let start = Instant::now();
    let pod = ctd
        .run_pod(&config, handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}"));
    ctd.pull(image, &config);
    let id = ctd.create_container(
        &pod,
        &config,
        "c",
        image,
        &["sh", "-c", "echo first; exec sleep 1000"],
    );
    ctd.start_container(&id);
    let log = ctd.log_file(&config, "c");
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(" stdout F first")
    {
        assert!(
            start.elapsed() < cri_support::BOUND,
            "no output from {name}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    let pss = pod_memory(&pod);
    ctd.stop_pod(&pod).expect("StopPodSandbox");
    ctd.remove_pod(&pod).expect("RemovePodSandbox");
    (took, pss)
}

/// Every process: (pid, parent, command line).
fn processes() -> Vec<(u32, u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((
                pid,
                parent,
                String::from_utf8_lossy(&cmd).replace('\0', " "),
            ))
        })
        .collect()
}

fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The PSS (KiB) of pod `pod`'s processes: those under its shim (the one whose `-id` is
/// the sandbox), and the shim itself.
fn pod_memory(pod: &str) -> (u64, u64) {
    let all = processes();
    let shims: Vec<u32> = all
        .iter()
        .filter(|(_, _, cmd)| cmd.contains("containerd-shim") && cmd.contains(pod))
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut under = Vec::new();
    let mut frontier = shims.clone();
    while let Some(parent) = frontier.pop() {
        for (pid, ppid, _) in &all {
            if *ppid == parent && !shims.contains(pid) && !under.contains(pid) {
                under.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    (
        under.iter().map(|p| pss_kib(*p)).sum(),
        shims.iter().map(|p| pss_kib(*p)).sum(),
    )
}
