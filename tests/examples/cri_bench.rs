//! Benchmark (not a test): CRI RunPodSandbox + PullImage (cached) + CreateContainer +
//! StartContainer to the container's first line in its CRI log file, with the runtime
//! handler `capsa` (capsa-runc) against `runc`, interleaved, through a containerd of its
//! own set up as the CRI tests set it up (tests/cri_support).
//!
//!     cargo build -p capsa --bins
//!     cargo run -p capsa-tests --example cri_bench -- [ROUNDS]
//!
//! Prints one line per handler: median, p10, p90, min and max in milliseconds.

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
    let handlers = ["capsa", "runc"];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); handlers.len()];
    // One untimed round per handler first (page cache, the shim binary).
    for round in 0..=rounds {
        for (h, handler) in handlers.iter().enumerate() {
            let took = first_output(&ctd, &image, &format!("p{round}{handler}"), handler);
            if round > 0 {
                times[h].push(took);
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
        println!(
            "{handler:>6}: median {:.1} ms (p10 {:.1}, p90 {:.1}; min {:.1}, max {:.1})",
            at(50),
            at(10),
            at(90),
            ms(t[0]),
            ms(t[t.len() - 1])
        );
    }
}

/// One pod with `handler`: the time from RunPodSandbox to the container's first log line;
/// the pod is removed afterwards (not timed).
fn first_output(ctd: &CriContainerd, image: &str, name: &str, handler: &str) -> Duration {
    let config = ctd.pod_config(name);
    let start = Instant::now();
    let pod = ctd
        .run_pod(&config, handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}"));
    ctd.pull(image, &config);
    let id = ctd.create_container(&pod, &config, "c", image, &["echo", "first"]);
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
    ctd.stop_pod(&pod).expect("StopPodSandbox");
    ctd.remove_pod(&pod).expect("RemovePodSandbox");
    took
}
