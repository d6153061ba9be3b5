//! VM templates on QEMU (TCG here), as a user and an attacker check them: the first VM
//! container builds the template, the next ones start from it, each clone has its own
//! random numbers, hostname, address and MAC; a damaged or stale template is rebuilt, never
//! restored; clones map one sealed copy of the template's memory that no process can write,
//! never the template's file.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use capsa_tests::{text, TestEnv};
use sha2::Digest;

/// What each clone prints: random bytes, hostname, eth0's address and MAC, the disks.
const IDENTITY: &str = "head -c16 /dev/urandom | od -An -tx1 | tr -d ' '; hostname; \
     ip -4 -o addr show eth0 | awk '{print $4}'; cat /sys/class/net/eth0/address; \
     date -u +%s; df -k / | awk 'NR==2 {print $2}'";

/// `capsa run --rm --isolation vm ARGS` (image and command in ARGS), logging at info.
fn run_vm(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "--log-level",
        "info",
        "run",
        "--cgroup-parent",
        env.cgroup_parent(),
        "--rm",
        "--isolation",
        "vm",
    ];
    all.extend_from_slice(args);
    env.capsa_env(&all, vars)
}

fn restored(stderr: &str) -> bool {
    stderr.contains("vm restored from template")
}

fn template_dirs(env: &TestEnv) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(env.root().join("vm/templates"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// VM container `name`'s engine record (`vm/engine.json`), when it reads.
fn engine_record(env: &TestEnv, name: &str) -> Option<serde_json::Value> {
    let id = env.inspect(name, "{{.Id}}");
    let path = env
        .root()
        .join("containers")
        .join(id)
        .join("vm/engine.json");
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The template container `name`'s engine was restored from (None: booted cold).
fn engine_template(env: &TestEnv, name: &str) -> Option<String> {
    engine_record(env, name)?["template"]
        .as_str()
        .map(String::from)
}

#[test]
fn the_first_vm_builds_the_template_and_each_next_one_is_a_distinct_clone() {
    let env = TestEnv::new();
    // Without a network, the clone shows no NIC (the template has one).
    let out = run_vm(
        &env,
        &[],
        &["--network", "none", "busybox", "ls", "/sys/class/net"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.lines().any(|l| l == "lo"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("eth"), "{stdout}");
    assert!(stderr.contains("capsa: vm template: built"), "{stderr}");
    assert!(restored(&stderr), "{stderr}");
    let key = template_dirs(&env).pop().expect("a template");
    let key = key.file_name().unwrap().to_str().unwrap();
    // Three clones side by side.
    let names = ["c0", "c1", "c2"];
    for name in names {
        let script = format!("{IDENTITY}; echo done; exec sleep 1000");
        let out = env.run(&[
            "-d",
            "--name",
            name,
            "--isolation",
            "vm",
            "busybox",
            "sh",
            "-c",
            &script,
        ]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            !stderr.contains("vm template: built"),
            "built once: {stderr}"
        );
        assert_eq!(engine_template(&env, name).as_deref(), Some(key), "{name}");
    }
    let mut seen = Vec::new();
    for name in names {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let stdout = loop {
            let logs = text(&env.capsa(&["logs", name]).stdout);
            if logs.contains("done") {
                break logs;
            }
            assert!(std::time::Instant::now() < deadline, "{name}: {logs}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 7, "{stdout}");
        let host_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let guest_now: u64 = lines[4].parse().expect("date +%s");
        assert!(
            guest_now + 300 > host_now && guest_now <= host_now + 1,
            "the clone's clock is the host's: {guest_now} vs {host_now}"
        );
        // The root's writable layer is the clone's own 4 GiB disk, found by its serial in a
        // slot whose placeholder the guest believes larger (it is not probed again).
        let root_kib: u64 = lines[5].parse().expect("df -k /");
        assert!(
            (3_500_000..=4_194_304).contains(&root_kib),
            "the root is the 4 GiB writable disk: {stdout}"
        );
        assert_ne!(
            lines[3], "02:ca:50:00:00:01",
            "the template's MAC: {stdout}"
        );
        let ip = env.inspect(name, "{{.NetworkSettings.IPAddress}}");
        let mac = env.inspect(name, "{{.NetworkSettings.MacAddress}}");
        assert_eq!(lines[2].split('/').next(), Some(ip.as_str()), "{stdout}");
        assert_eq!(lines[3], mac, "{stdout}");
        seen.push(lines[..4].iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    for field in 0..4 {
        let values: std::collections::HashSet<&String> = seen.iter().map(|c| &c[field]).collect();
        assert_eq!(
            values.len(),
            3,
            "field {field} repeats across clones: {seen:?}"
        );
    }
    for name in names {
        assert!(env.capsa(&["rm", "-f", name]).status.success());
    }
    assert_eq!(template_dirs(&env).len(), 1);
    env.assert_clean();
}

#[test]
fn a_damaged_or_stale_template_is_rebuilt_and_never_restored() {
    let env = TestEnv::new();
    let hi = |vars: &[(&str, &str)]| {
        let out = run_vm(&env, vars, &["busybox", "echo", "hi"]);
        let stderr = text(&out.stderr);
        assert_eq!(text(&out.stdout), "hi\n", "{stderr}");
        stderr
    };
    assert!(hi(&[]).contains("capsa: vm template: built"));
    let dir = template_dirs(&env).pop().expect("a template");
    // A truncated device state.
    let state = dir.join("state");
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let stderr = hi(&[]);
    assert!(
        stderr.contains("device state does not match its hash"),
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&state).unwrap().len(), len, "rebuilt");
    // Guest memory written behind the template's back.
    let ram = dir.join("ram");
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&ram).unwrap(),
        b"evil",
        4096,
    )
    .unwrap();
    let stderr = hi(&[]);
    assert!(stderr.contains("memory file changed"), "{stderr}");
    assert!(restored(&stderr), "{stderr}");
    // Another guest kernel: a new template.
    let kernel_copy = env.root().join("vmlinux-copy");
    let kernel = std::env::var("CAPSA_KERNEL").expect("CAPSA_KERNEL");
    std::fs::copy(&kernel, &kernel_copy).unwrap();
    let stderr = hi(&[("CAPSA_KERNEL", kernel_copy.to_str().unwrap())]);
    assert!(stderr.contains("capsa: vm template: built"), "{stderr}");
    // It replaces the template of the same memory and vCPUs made from the other kernel:
    // one folder, one RAM holder (an old one would keep its RAM in memory for good).
    assert_eq!(template_dirs(&env).len(), 1);
    wait_for_holders(&env, 1);
    // The copy changes: the stale template is replaced too.
    std::fs::copy(&kernel, &kernel_copy).unwrap();
    let stderr = hi(&[("CAPSA_KERNEL", kernel_copy.to_str().unwrap())]);
    assert!(stderr.contains("capsa: vm template: built"), "{stderr}");
    assert_eq!(template_dirs(&env).len(), 1);
    wait_for_holders(&env, 1);
    // Templates off: a cold boot.
    let stderr = hi(&[("CAPSA_VM_TEMPLATE", "off")]);
    assert!(!restored(&stderr), "{stderr}");
    // `system vm-template`: the copy's template is stale once its kernel is gone; rm
    // removes them all; warm builds the default one again.
    std::fs::remove_file(&kernel_copy).unwrap();
    let ls = text(&env.capsa(&["system", "vm-template", "ls"]).stdout);
    assert_eq!(ls.matches(" ready ").count(), 0, "{ls}");
    assert_eq!(ls.matches(" stale ").count(), 1, "{ls}");
    assert!(env.capsa(&["system", "vm-template", "rm"]).status.success());
    assert!(template_dirs(&env).is_empty());
    let warm = env.capsa(&["system", "vm-template", "warm"]);
    assert!(
        text(&warm.stdout).contains("(built)"),
        "{}",
        text(&warm.stderr)
    );
    let stderr = hi(&[]);
    assert!(!stderr.contains("vm template: built"), "{stderr}");
    assert!(restored(&stderr), "{stderr}");
    env.assert_clean();
}

/// The (device, inode) of every file engine `pid` maps, with the path its maps show.
fn mapped_files(pid: u32) -> Vec<((u64, u64), String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let range = line.split_whitespace().next()?;
            let m = std::fs::metadata(format!("/proc/{pid}/map_files/{range}")).ok()?;
            let path = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ");
            Some(((m.dev(), m.ino()), path))
        })
        .collect()
}

/// The engine PID of VM container `name`.
fn engine_pid(env: &TestEnv, name: &str) -> u32 {
    let record = engine_record(env, name).expect("the engine record");
    record["pid"].as_u64().unwrap() as u32
}

/// PIDs of the RAM holders of this test's state root.
fn holders(env: &TestEnv) -> Vec<u32> {
    let root = env.root().to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("__vm-template-ram") && cmdline.contains(&root)).then_some(pid)
        })
        .collect()
}

/// `text` without its terminal colours (the log's `field=value` pairs are coloured).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits (30 s at most) until the state root has `n` RAM holders: they end on their own
/// once their template changes.
fn wait_for_holders(env: &TestEnv, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while holders(env).len() != n {
        let left = holders(env);
        assert!(
            std::time::Instant::now() < deadline,
            "holders: {left:?}, not {n}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

const SHARED_RAM: &str = "/memfd:capsa-vm-template-ram (deleted)";

#[test]
fn clones_share_one_sealed_memory_that_no_engine_or_host_process_can_write() {
    let env = TestEnv::new();
    let mut memfds = Vec::new();
    for name in ["c0", "c1"] {
        let out = env.run(&[
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--isolation",
            "vm",
            "busybox",
            "sleep",
            "1000",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let pid = engine_pid(&env, name);
        let maps = mapped_files(pid);
        let template = template_dirs(&env).pop().expect("a template");
        let ram = std::fs::metadata(template.join("ram")).unwrap();
        assert!(
            !maps.iter().any(|(file, _)| *file == (ram.dev(), ram.ino())),
            "{name} maps the template's own file: {maps:?}"
        );
        let memfd = maps.iter().find(|(_, path)| path == SHARED_RAM);
        memfds.push(memfd.unwrap_or_else(|| panic!("{name}: {maps:?}")).0);
        // The jail's procfs, which QEMU opened the memfd from, is gone once it has.
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        assert!(!mounts.contains(" - proc "), "{mounts}");
    }
    assert_eq!(memfds[0], memfds[1], "both clones map the one memfd");
    // As an attacker (root on the host, or an engine reopening its own descriptor).
    let pid = engine_pid(&env, "c0");
    let fd = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some(SHARED_RAM)))
        .expect("the engine holds the memfd");
    let memfd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fd.path())
        .unwrap();
    let eperm = |r: std::io::Result<()>| r.unwrap_err().raw_os_error() == Some(libc::EPERM);
    assert!(eperm(std::os::unix::fs::FileExt::write_all_at(
        &memfd, b"evil", 4096
    )));
    assert!(eperm(memfd.set_len(0)));
    drop(memfd);
    let out = run_vm(&env, &[], &["--network", "none", "busybox", "echo", "hi"]);
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), "hi\n", "{stderr}");
    assert!(plain(&stderr).contains("shared_ram=true"), "{stderr}");
    for name in ["c0", "c1"] {
        assert!(env.capsa(&["rm", "-f", name]).status.success());
    }
    // One holder (root, no jail); without it, a clone gets a private copy, not the file.
    let holder = holders(&env);
    assert_eq!(holder.len(), 1, "{holder:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", holder[0])).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "{status}"
    );
    // SAFETY: kill with integers, on the holder found above.
    assert_eq!(unsafe { libc::kill(holder[0] as i32, libc::SIGKILL) }, 0);
    let template = template_dirs(&env).pop().unwrap();
    std::fs::remove_file(template.join("ram.sock")).unwrap();
    std::fs::create_dir(template.join("ram.sock")).unwrap();
    let out = run_vm(&env, &[], &["--network", "none", "busybox", "echo", "hi"]);
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), "hi\n", "{stderr}");
    assert!(stderr.contains("shared RAM: a private copy"), "{stderr}");
    assert!(plain(&stderr).contains("shared_ram=false"), "{stderr}");
    std::fs::remove_dir(template.join("ram.sock")).unwrap();
    for f in ["ram", "state", "manifest.json"] {
        let m = std::fs::metadata(template.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{f}");
        assert_eq!(m.mode() & 0o022, 0, "{f} is writable by others");
    }
    let dir_mode = std::fs::metadata(&template).unwrap().mode();
    assert_eq!(dir_mode & 0o077, 0, "the template's folder is root's alone");
    // The holder ends with its template.
    let out = run_vm(&env, &[], &["--network", "none", "busybox", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(holders(&env).len(), 1);
    assert!(env.capsa(&["system", "vm-template", "rm"]).status.success());
    wait_for_holders(&env, 0);
    env.assert_clean();
}

#[test]
fn the_tcg_cache_setting_reaches_the_engine_and_bad_values_are_refused() {
    let env = TestEnv::new();
    let run = |value: &str, args: &[&str]| {
        let mut all = vec!["run", "--isolation", "vm", "--network", "none"];
        all.extend_from_slice(args);
        env.capsa_env(&all, &[("CAPSA_VM_TCG_CACHE_MIB", value)])
    };
    for bad in ["abc", "4", "4096", ""] {
        let out = run(bad, &["--rm", "busybox", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad:?}");
        assert!(
            text(&out.stderr).contains("CAPSA_VM_TCG_CACHE_MIB"),
            "{bad:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(text(&env.capsa(&["ps", "-aq"]).stdout), "", "nothing made");
    // A denser engine: a 16 MiB translation cache, still restored from the template.
    let out = run("16", &["-d", "--name", "dense", "busybox", "sleep", "600"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", engine_pid(&env, "dense"))).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("tcg,tb-size=16 "), "{cmdline}");
    assert!(engine_template(&env, "dense").is_some(), "restored");
    let out = env.capsa(&["exec", "dense", "echo", "works"]);
    assert_eq!(text(&out.stdout), "works\n", "{}", text(&out.stderr));
    assert!(env.capsa(&["rm", "-f", "dense"]).status.success());
    env.assert_clean();
}

/// An image of `1 + steps.len()` layers: busybox, then one commit per step's script.
fn layered_image(env: &TestEnv, name: &str, steps: &[&str]) {
    let mut base = "busybox".to_string();
    for (i, script) in steps.iter().enumerate() {
        let (c, tag) = (format!("{name}-c{i}"), format!("{name}:{i}"));
        let out = env.run(&["--name", &c, &base, "sh", "-c", script]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = env.capsa(&["commit", &c, &tag]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(env.capsa(&["rm", &c]).status.success());
        base = tag;
    }
    assert!(env.capsa(&["tag", &base, name]).status.success());
}

#[test]
fn an_image_with_more_layers_than_disk_slots_runs_from_the_template_its_bottom_layers_merged() {
    let env = TestEnv::new();
    // Seven layers; the second and third hold a whiteout and an opaque directory, which the
    // merged image of the bottom three must apply, not copy.
    layered_image(
        &env,
        "tall",
        &[
            "echo 1 > /f1; mkdir /d; echo a > /d/a",
            "rm /f1; rm -rf /d; mkdir /d; echo b > /d/b; echo 2 > /f2",
            "echo 3 > /f3",
            "echo 4 > /f4",
            "echo 5 > /f5",
            "echo 6 > /f6",
        ],
    );
    let script = "ls /d; cat /f2 /f3 /f6; test -e /f1 || echo no-f1";
    // With a network (the NIC takes one of microvm's eight transports, as the agent does).
    let out = run_vm(&env, &[], &["tall", "sh", "-c", script]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout, "b\n2\n3\n6\nno-f1\n", "{stderr}");
    assert!(restored(&stderr), "from the template: {stderr}");
    let merged: Vec<PathBuf> = std::fs::read_dir(env.root().join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("merged.erofs"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(merged.len(), 1, "one merged image of the bottom layers");

    // Five volumes leave no room beside the NIC and the agent: refused by name, nothing made.
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--network", "bridge"];
    let volumes: Vec<String> = (0..5)
        .map(|i| {
            let host = dir.path().join(format!("v{i}"));
            std::fs::create_dir(&host).unwrap();
            format!("{}:/v{i}", host.display())
        })
        .collect();
    for v in &volumes {
        args.extend(["-v", v.as_str()]);
    }
    args.extend(["tall", "true"]);
    let out = run_vm(&env, &[], &args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("5 volumes are too many for a VM") && stderr.contains("at most 4 volumes"),
        "{stderr}"
    );
    env.assert_clean();
}

/// Unmounts what it names when dropped (the test's own tmpfs), even when an assert fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_template_whose_state_the_engine_refuses_or_that_cannot_fit_on_disk_is_named_and_not_used() {
    let env = TestEnv::new();
    let hi = |vars: &[(&str, &str)]| run_vm(&env, vars, &["busybox", "echo", "hi"]);
    let out = hi(&[]);
    assert!(
        text(&out.stderr).contains("capsa: vm template: built"),
        "{}",
        text(&out.stderr)
    );
    let dir = template_dirs(&env).pop().expect("a template");
    let key = dir.file_name().unwrap().to_str().unwrap().to_string();

    // A device state that passes its hash (root rewrote both) but that QEMU cannot load.
    let state = dir.join("state");
    let mut bytes = std::fs::read(&state).unwrap();
    bytes.reverse();
    std::fs::write(&state, &bytes).unwrap();
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["state_sha256"] = hex::encode(sha2::Sha256::digest(&bytes)).into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let out = hi(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&format!("restoring VM template {key}")),
        "{stderr}"
    );
    // QEMU's own reason, from its log, and what capsa did about it.
    assert!(stderr.contains("migration"), "{stderr}");
    assert!(
        stderr.contains("the template was removed: the next VM builds it again"),
        "{stderr}"
    );
    assert!(
        template_dirs(&env).is_empty(),
        "the refused template is gone"
    );
    let out = hi(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), "hi\n", "{stderr}");
    assert!(stderr.contains("capsa: vm template: built"), "{stderr}");
    assert!(restored(&stderr), "{stderr}");

    // A template another capsa made (another layout) shows as stale, and is rebuilt.
    let manifest_path = template_dirs(&env).pop().unwrap().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["inputs"]["layout"] = 1.into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let ls = text(&env.capsa(&["system", "vm-template", "ls"]).stdout);
    assert!(
        ls.contains("stale (made by another version of capsa)"),
        "{ls}"
    );
    let stderr = text(&hi(&[]).stderr);
    assert!(stderr.contains("capsa: vm template: built"), "{stderr}");

    // No room for a template's RAM: said, and the VM boots cold.
    assert!(env.capsa(&["system", "vm-template", "rm"]).status.success());
    let templates = env.root().join("vm/templates");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=20m", "capsa-test-full"])
        .arg(&templates)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _unmount = Unmount(templates.clone());
    let out = hi(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), "hi\n", "{stderr}");
    assert!(stderr.contains("no space left on device"), "{stderr}");
    assert!(stderr.contains("this VM boots cold"), "{stderr}");
    assert!(!restored(&stderr), "{stderr}");
    assert!(
        template_dirs(&env).is_empty(),
        "nothing half-made: {:?}",
        template_dirs(&env)
    );
    drop(_unmount);
    env.assert_clean();
}

#[test]
fn templates_beyond_the_count_kept_go_least_recently_used_first() {
    let env = TestEnv::new();
    let keep_two = [("CAPSA_VM_TEMPLATES", "2")];
    let warm = |mib: &str| {
        let out = env.capsa_env(
            &["system", "vm-template", "warm", "--guest-mib", mib],
            &keep_two,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let default = warm("256");
    let small = warm("160");
    assert_eq!(template_dirs(&env).len(), 2);
    // A VM started from the default template makes it the more recently used one...
    let out = run_vm(&env, &keep_two, &["busybox", "true"]);
    assert!(restored(&text(&out.stderr)), "{}", text(&out.stderr));
    // ...so a third shape takes the place of the 160 MiB one.
    let third = warm("192");
    let keys: Vec<String> = template_dirs(&env)
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&default) && keys.contains(&third), "{keys:?}");
    assert!(!keys.contains(&small), "{keys:?}");
    let out = env.capsa_env(
        &["system", "vm-template", "warm"],
        &[("CAPSA_VM_TEMPLATES", "0")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("CAPSA_VM_TEMPLATES=\"0\""),
        "{}",
        text(&out.stderr)
    );
    assert!(env.capsa(&["system", "vm-template", "rm"]).status.success());
    env.assert_clean();
}
