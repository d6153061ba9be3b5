//! `capsa bench --quick` as a user runs it: the report must be complete and consistent (every
//! scenario has an entry for every isolation and peer, with figures or the reason there are
//! none; percentiles in order; the files written), never a check of the figures themselves.

use std::time::Duration;

use capsa_tests::{run_bounded, text, TestEnv};
use serde_json::Value;

fn bench(env: &TestEnv, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["bench", "--cgroup-parent", env.cgroup_parent()];
    args.extend_from_slice(extra);
    run_bounded(env.command(&args), Duration::from_secs(600))
}

fn ordered(s: &Value) -> bool {
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    f("min") <= f("p50") && f("p50") <= f("p95") && f("p95") <= f("p99") && f("p99") <= f("max")
}

#[test]
fn quick_bench_reports_every_scenario_for_every_isolation_and_peer() {
    let env = TestEnv::new();
    let out_dir = env.root().join("report");
    let out = bench(&env, &["--quick", "--out", out_dir.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for file in [
        "bench.json",
        "bench.md",
        "bench-start-cdf.svg",
        "bench-density.svg",
        "bench-overhead.svg",
    ] {
        assert!(out_dir.join(file).is_file(), "{file} written");
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("bench.json")).unwrap())
            .unwrap();
    let subjects: Vec<&Value> = json["subjects"].as_array().unwrap().iter().collect();
    let names: Vec<&str> = subjects
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "capsa-container",
            "capsa-vm",
            "capsa-vm-cold",
            "runc",
            "runsc",
            "qemu"
        ],
        "both isolations, the VM from its template and cold, and every default peer"
    );
    // Each capsa VM says how it starts; every timed start of the template VM was a restore
    // (one that booted cold fails its run, so `ok` below means all were).
    assert_eq!(subjects[1]["vm_start"], "template", "{}", subjects[1]);
    assert_eq!(subjects[2]["vm_start"], "cold boot", "{}", subjects[2]);
    let machine = &json["machine"];
    for key in ["cpu", "host_kernel", "kvm", "cgroup"] {
        assert!(
            !machine[key].as_str().unwrap_or("").is_empty(),
            "machine.{key}"
        );
    }
    for s in &subjects {
        let name = s["name"].as_str().unwrap();
        if name.starts_with("capsa") || name == "qemu" || name == "runc" {
            assert!(s["unavailable"].is_null(), "{name} runs here: {s}");
        }
        if s["isolation"] == "vm" {
            assert!(
                ["kvm", "tcg"].contains(&s["accelerator"].as_str().unwrap_or("")),
                "{name} labelled with its accelerator"
            );
        }
        for scenario in ["start", "memory", "density", "overhead"] {
            let entry = &json[scenario][name];
            let status = entry["status"].as_str().unwrap_or("");
            if name == "capsa-vm-cold" && scenario == "overhead" {
                // The same guest as capsa-vm: its probes run once, there.
                assert_eq!(status, "skipped", "{entry}");
                continue;
            }
            match status {
                "ok" => {}
                "skipped" => assert!(
                    !entry["reason"].as_str().unwrap_or("").is_empty(),
                    "{scenario} {name} skipped without a reason"
                ),
                "failed" => panic!("{scenario} {name} failed: {}", entry["error"]),
                _ => panic!("{scenario} has no entry for {name}: {entry}"),
            }
            if s["unavailable"].is_null() {
                assert_eq!(status, "ok", "{scenario} {name}: {entry}");
            }
        }
        let start = &json["start"][name];
        if start["status"] == "ok" {
            for figure in ["first_output_ms", "exit_ms", "cpu_ms"] {
                assert!(
                    ordered(&start[figure]),
                    "{name} {figure}: {}",
                    start[figure]
                );
                assert_eq!(
                    start[figure]["n"].as_u64().unwrap() as usize,
                    start["samples"][figure].as_array().unwrap().len()
                );
            }
        }
        let density = &json["density"][name];
        if density["status"] == "ok" {
            assert!(!density["steps"].as_array().unwrap().is_empty());
            assert!(
                !density["stopped"].as_str().unwrap().is_empty(),
                "why it stopped"
            );
        }
        let overhead = &json["overhead"][name];
        if overhead["status"] == "ok" {
            for key in [
                "getpid_ns",
                "cpu_mips",
                "memory_copy_gib_s",
                "tcp_rtt_us",
                "tcp_mib_s",
                "file_write_fsync_mib_s",
                "file_read_cached_mib_s",
            ] {
                assert!(
                    !overhead[key].is_null() || !overhead["not_measured"][key].is_null(),
                    "overhead {name} {key}: a figure or the reason it has none"
                );
            }
        }
    }
    assert_eq!(json["overhead_baseline"]["status"], "ok");
    let vm_memory = &json["memory"]["capsa-vm"];
    assert!(
        vm_memory["guest_touched_kib"].as_u64().unwrap() > 0,
        "{vm_memory}"
    );
    let markdown = std::fs::read_to_string(out_dir.join("bench.md")).unwrap();
    assert!(markdown.contains(json["machine"]["host_kernel"].as_str().unwrap()));
    assert!(
        stdout.contains("capsa-vm"),
        "the summary on the terminal: {stdout}"
    );
    assert!(std::fs::read_to_string(out_dir.join("bench-start-cdf.svg"))
        .unwrap()
        .starts_with("<svg"));

    // Against itself, every figure is within the noise.
    let again = bench(
        &env,
        &[
            "--quick",
            "--isolation",
            "container",
            "--peers",
            "",
            "--scenario",
            "start",
            "--out",
            env.root().join("again").to_str().unwrap(),
            "--compare-to",
            out_dir.join("bench.json").to_str().unwrap(),
        ],
    );
    let again_out = text(&again.stdout);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        again_out.contains("start: first output p50 (ms)") && again_out.contains("capsa-container"),
        "{again_out}"
    );
    env.assert_clean();
    assert!(
        !env.root()
            .join("bench")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("work-")),
        "the bundles and initramfs of the peers are removed"
    );
}

#[test]
fn bad_bench_flags_and_a_missing_image_are_named() {
    let env = TestEnv::new();
    let out = bench(&env, &["--scenario", "speed"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--scenario \"speed\""),
        "{}",
        text(&out.stderr)
    );
    let out = bench(&env, &["--image", "nosuchimage"]);
    assert!(
        text(&out.stderr).contains("image nosuchimage"),
        "{}",
        text(&out.stderr)
    );
    let old = env.root().join("old.json");
    std::fs::write(&old, r#"{"schema": 99}"#).unwrap();
    let out = bench(&env, &["--compare-to", old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("schema"),
        "{}",
        text(&out.stderr)
    );
}
