//! Named and anonymous volumes as a user and an attacker check them: data that outlives
//! its container (and its VM), `--mount` in Docker's forms, a volume in use that cannot be
//! removed, prune, an image's `VOLUME` filled from the image and removed by `rm -v`, bad
//! input refused in one line with nothing made, and a volume whose data directory was
//! swapped for a symlink to a host directory.

use capsa_tests::{busybox_tarball, text, TestEnv};
use std::path::{Path, PathBuf};

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn volume_names(env: &TestEnv) -> Vec<String> {
    let out = env.capsa(&["volume", "ls", "-q"]);
    ok(&out, "volume ls").lines().map(String::from).collect()
}

/// The folders in the store's volumes directory (made or not).
fn volume_dirs(env: &TestEnv) -> Vec<PathBuf> {
    std::fs::read_dir(env.root().join("volumes"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// One line on stderr, exit 125.
fn refused_in_one_line(out: &std::process::Output, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: not one line: {err}");
    assert!(err.starts_with("capsa: "), "{what}: {err}");
}

#[test]
fn a_named_volume_outlives_its_container_and_the_next_one_reads_it() {
    let env = TestEnv::new();
    let out = env.run(&[
        "--name",
        "writer",
        "--network",
        "none",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/file",
    ]);
    ok(&out, "writer");
    assert_eq!(
        volume_names(&env),
        ["data"],
        "-v NAME makes the volume on first use"
    );
    ok(&env.capsa(&["rm", "writer"]), "rm");
    assert_eq!(
        volume_names(&env),
        ["data"],
        "rm (without -v) keeps a named volume"
    );
    let read = env.sh(&["--network", "none", "-v", "data:/data"], "cat /data/file");
    assert_eq!(read, "kept\n");
    let inspect = ok(&env.capsa(&["volume", "inspect", "data"]), "inspect");
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Name"], "data");
    assert_eq!(v[0]["Driver"], "local");
    assert_eq!(v[0]["Scope"], "local");
    let mountpoint = PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    assert_eq!(mountpoint, env.root().join("volumes/data/_data"));
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("file")).unwrap(),
        "kept\n"
    );
    // Private to root above _data, as the rest of the store.
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&env.root().join("volumes")), 0o700);
    assert_eq!(mode(&env.root().join("volumes/data")), 0o700);
}

#[test]
fn mount_flags_in_dockers_forms() {
    let env = TestEnv::new();
    let host = tempfile::tempdir().unwrap();
    let bind = format!("type=bind,source={},destination=/b", host.path().display());
    let out = env.sh(
        &[
            "--network",
            "none",
            "--mount",
            "type=volume,src=vol,dst=/v",
            "--mount",
            &bind,
            "--mount",
            "type=tmpfs,target=/t,tmpfs-size=1m",
        ],
        "echo v > /v/f && echo b > /b/f && grep ' /t ' /proc/mounts",
    );
    assert!(
        out.contains("tmpfs /t tmpfs") && out.contains("size=1024k"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("f")).unwrap(),
        "b\n"
    );
    assert_eq!(
        std::fs::read_to_string(env.root().join("volumes/vol/_data/f")).unwrap(),
        "v\n"
    );
    // readonly / ro, and -v's :ro, refuse writes.
    for flags in [
        ["--mount", "type=volume,source=vol,target=/v,readonly"],
        ["--mount", "type=volume,src=vol,dst=/v,ro=true"],
        ["-v", "vol:/v:ro"],
    ] {
        let mut args = vec!["--rm", "--network", "none"];
        args.extend_from_slice(&flags);
        args.extend_from_slice(&["busybox", "sh", "-c", "cat /v/f; echo x > /v/g"]);
        let out = env.run(&args);
        assert_ne!(out.status.code(), Some(0), "{flags:?} wrote");
        assert_eq!(text(&out.stdout), "v\n", "{flags:?}");
        assert!(
            text(&out.stderr).contains("Read-only"),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(!env.root().join("volumes/vol/_data/g").exists());
    // type=volume without a source is an anonymous volume; --rm takes it.
    env.sh(
        &["--network", "none", "--mount", "type=volume,dst=/anon"],
        "touch /anon/x",
    );
    assert_eq!(volume_names(&env), ["vol"]);
}

#[test]
fn a_volume_in_use_is_not_removed_and_prune_takes_only_unused_ones() {
    let env = TestEnv::new();
    ok(
        &env.capsa(&["volume", "create", "--label", "team=a", "kept"]),
        "create",
    );
    ok(&env.capsa(&["volume", "create", "spare"]), "create");
    // A stopped container still uses its volumes.
    ok(
        &env.run(&[
            "--name",
            "user",
            "--network",
            "none",
            "-v",
            "kept:/k",
            "-v",
            "/anon",
            "busybox",
            "true",
        ]),
        "run",
    );
    let anon: Vec<String> = volume_names(&env)
        .into_iter()
        .filter(|n| n.len() == 64)
        .collect();
    assert_eq!(
        anon.len(),
        1,
        "-v /path makes one anonymous volume: {:?}",
        volume_names(&env)
    );
    let out = env.capsa(&["volume", "rm", "kept"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("in use") && err.contains("user"),
        "names the container: {err}"
    );
    assert!(env.root().join("volumes/kept/_data").is_dir());
    let out = ok(
        &env.capsa(&["volume", "ls", "--filter", "dangling=true", "-q"]),
        "ls",
    );
    assert_eq!(out, "spare\n");
    let out = ok(
        &env.capsa(&["volume", "ls", "--filter", "label=team=a", "-q"]),
        "ls",
    );
    assert_eq!(out, "kept\n");
    let df = ok(&env.capsa(&["system", "df"]), "df");
    let row = df
        .lines()
        .find(|l| l.starts_with("Local Volumes"))
        .unwrap_or_default();
    assert_eq!(row.split_whitespace().nth(2), Some("3"), "{df}");
    assert_eq!(row.split_whitespace().nth(3), Some("2"), "two in use: {df}");
    // Prune: anonymous unused only; the used anonymous one and named ones stay.
    let out = ok(&env.capsa(&["volume", "prune", "-f"]), "prune");
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(volume_names(&env).len(), 3);
    let out = ok(&env.capsa(&["volume", "prune", "-f", "-a"]), "prune -a");
    assert!(out.contains("spare"), "{out}");
    let mut left = volume_names(&env);
    left.sort();
    let mut want = vec![anon[0].clone(), "kept".to_string()];
    want.sort();
    assert_eq!(left, want);
    // rm -v takes the container's anonymous volume, not the named one.
    ok(&env.capsa(&["rm", "-v", "user"]), "rm -v");
    assert_eq!(volume_names(&env), ["kept"]);
    ok(&env.capsa(&["volume", "rm", "kept"]), "rm");
    assert!(volume_names(&env).is_empty());
    assert!(volume_dirs(&env).is_empty(), "{:?}", volume_dirs(&env));
}

#[test]
fn an_images_volume_is_filled_from_the_image_and_goes_with_rm_v() {
    let env = TestEnv::new();
    let tar = busybox_tarball().to_str().unwrap().to_string();
    let out = env.capsa(&[
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV PATH=/bin",
        "-c",
        r#"VOLUME ["/etc"]"#,
        &tar,
        "withvol",
    ]);
    ok(&out, "import");
    let out = env.run(&[
        "--name",
        "vv",
        "--network",
        "none",
        "withvol",
        "sh",
        "-c",
        "grep -c app /etc/passwd; cat /etc/hostname; echo mine > /etc/mine",
    ]);
    let stdout = ok(&out, "run");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "1", "the volume holds the image's /etc: {stdout}");
    assert!(
        !lines[1].is_empty(),
        "/etc/hostname stays on top of the volume"
    );
    let names = volume_names(&env);
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].len(), 64, "anonymous: 64 hex digits: {names:?}");
    let data = env.root().join("volumes").join(&names[0]).join("_data");
    assert_eq!(
        std::fs::read_to_string(data.join("mine")).unwrap(),
        "mine\n"
    );
    assert!(std::fs::read_to_string(data.join("passwd"))
        .unwrap()
        .contains("app:x:1000"));
    let v: serde_json::Value = serde_json::from_str(&ok(
        &env.capsa(&["volume", "inspect", &names[0]]),
        "inspect",
    ))
    .unwrap();
    assert!(
        v[0]["Labels"].get("com.docker.volume.anonymous").is_some(),
        "{v}"
    );
    ok(&env.capsa(&["rm", "-v", "vv"]), "rm -v");
    assert!(volume_names(&env).is_empty());
    assert!(!data.exists());
    // run --rm removes its anonymous volumes too; nocopy leaves a new volume empty.
    let out = env.sh(
        &["--network", "none", "-v", "/etc:nocopy"],
        "ls /etc | wc -l",
    );
    assert_eq!(
        out.trim(),
        "3",
        "only the hostname, hosts and resolv.conf mount points: {out}"
    );
    assert!(volume_names(&env).is_empty());
}

#[test]
fn bad_volume_input_is_one_line_exit_125_and_makes_nothing() {
    let env = TestEnv::new();
    let host = tempfile::tempdir().unwrap();
    let missing = format!("type=bind,src={}/nope,dst=/d", host.path().display());
    for args in [
        vec!["volume", "rm", "nosuch"],
        vec!["volume", "inspect", "nosuch"],
        vec!["volume", "create", "../escape"],
        vec!["volume", "create", "a/b"],
        vec!["volume", "create", ".."],
        vec!["volume", "create", "-o", "type=nfs", "x1"],
        vec!["volume", "create", "-d", "nfs", "x2"],
        vec!["run", "--rm", "-v", "../x:/d", "busybox", "true"],
        vec!["run", "--rm", "-v", "a/b:/d", "busybox", "true"],
        vec!["run", "--rm", "-v", "..:/d", "busybox", "true"],
        vec![
            "run",
            "--rm",
            "--mount",
            "type=volume,src=../x,dst=/d",
            "busybox",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--mount",
            "type=volume,src=v",
            "busybox",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--mount",
            "type=nfs,dst=/d",
            "busybox",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--mount",
            "type=volume,src=v,dst=/d,bogus=1",
            "busybox",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--mount",
            "type=bind,dst=/d",
            "busybox",
            "true",
        ],
        vec!["run", "--rm", "--mount", &missing, "busybox", "true"],
        vec![
            "create",
            "--mount",
            "type=volume,src=v,dst=/d,bind-propagation=shared",
            "busybox",
            "true",
        ],
    ] {
        refused_in_one_line(&env.capsa(&args), &format!("{args:?}"));
    }
    assert!(volume_dirs(&env).is_empty(), "{:?}", volume_dirs(&env));
    assert!(
        env.container_dirs().is_empty(),
        "{:?}",
        env.container_dirs()
    );
    assert!(!host.path().join("nope").exists());
}

#[test]
fn a_data_directory_swapped_for_a_symlink_never_lets_a_container_write_the_host() {
    let env = TestEnv::new();
    ok(
        &env.run(&[
            "--name",
            "later",
            "--network",
            "none",
            "-v",
            "data:/data",
            "busybox",
            "true",
        ]),
        "first run",
    );
    let host = tempfile::tempdir().unwrap();
    let data = env.root().join("volumes/data/_data");
    std::fs::remove_dir(&data).unwrap();
    std::os::unix::fs::symlink(host.path(), &data).unwrap();
    // A new container, and the stopped one started again.
    let out = env.run(&[
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo owned > /data/pwned",
    ]);
    refused_in_one_line(&out, "run with a swapped _data");
    assert!(
        text(&out.stderr).contains("not a plain directory"),
        "{}",
        text(&out.stderr)
    );
    let out = env.capsa(&["start", "-a", "later"]);
    assert_ne!(out.status.code(), Some(0), "start with a swapped _data");
    let out = env.capsa(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        "type=volume,src=data,dst=/data",
        "busybox",
        "touch",
        "/data/pwned2",
    ]);
    assert_ne!(out.status.code(), Some(0));
    // Nor does `cp` into the stopped container's volume.
    let file = env.root().join("cp-in.txt");
    std::fs::write(&file, "x").unwrap();
    let out = env.capsa(&["cp", file.to_str().unwrap(), "later:/data/pwned3"]);
    assert_ne!(out.status.code(), Some(0), "cp with a swapped _data");
    let written: Vec<_> = std::fs::read_dir(host.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        written.is_empty(),
        "the host directory was written: {written:?}"
    );
}

fn vm(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--isolation", "vm"];
    all.extend_from_slice(args);
    env.run(&all)
}

#[test]
fn vm_a_named_volume_is_a_disk_that_outlives_its_vm() {
    let env = TestEnv::new();
    let out = vm(
        &env,
        &[
            "--name",
            "vmw",
            "-v",
            "data:/data",
            "busybox",
            "sh",
            "-c",
            "echo from-vm > /data/file; ls /data",
        ],
    );
    ok(&out, "first VM");
    ok(&env.capsa(&["rm", "vmw"]), "rm");
    let out = vm(
        &env,
        &[
            "--rm",
            "-v",
            "data:/data:ro",
            "busybox",
            "sh",
            "-c",
            "cat /data/file; echo x > /data/y",
        ],
    );
    assert_eq!(text(&out.stdout), "from-vm\n", "{}", text(&out.stderr));
    assert_ne!(
        out.status.code(),
        Some(0),
        ":ro is read-only in the guest too"
    );
    let out = vm(
        &env,
        &[
            "--rm",
            "-v",
            "data:/data",
            "busybox",
            "sh",
            "-c",
            "cat /data/file; ls /data",
        ],
    );
    // Nothing but what the workloads wrote: no `y` from the :ro VM, no lost+found.
    assert_eq!(
        text(&out.stdout),
        "from-vm\nfile\n",
        "{}",
        text(&out.stderr)
    );
    // One running VM per volume disk: two guest kernels on one ext4 would corrupt it.
    let out = vm(
        &env,
        &[
            "-d",
            "--name",
            "holder",
            "-v",
            "data:/data",
            "busybox",
            "sleep",
            "600",
        ],
    );
    ok(&out, "-d VM");
    capsa_tests::eventually(
        "the first VM runs",
        std::time::Duration::from_secs(60),
        || env.ps_line("holder").contains("Up"),
    );
    let out = vm(&env, &["--rm", "-v", "data:/data", "busybox", "true"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("attached to another running VM"), "{err}");
    ok(&env.capsa(&["rm", "-f", "holder"]), "rm -f");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&env.capsa(&["volume", "inspect", "data"]), "inspect")).unwrap();
    assert_eq!(
        v[0]["Mountpoint"],
        env.root()
            .join("volumes/data/disk.ext4")
            .display()
            .to_string()
    );
    assert!(
        !env.root().join("volumes/data/_data").exists(),
        "a VM volume is its disk only"
    );
    // A container cannot bind a disk a guest wrote: the host never mounts one.
    let out = env.run(&[
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/data",
        "busybox",
        "true",
    ]);
    refused_in_one_line(&out, "container with a VM volume");
    assert!(
        text(&out.stderr).contains("VM's disk"),
        "{}",
        text(&out.stderr)
    );
    // And a volume containers use never becomes a VM's disk behind their back.
    ok(
        &env.run(&[
            "--name",
            "cw",
            "--network",
            "none",
            "-v",
            "shared:/s",
            "busybox",
            "true",
        ]),
        "container",
    );
    let out = vm(&env, &["--rm", "-v", "shared:/s", "busybox", "true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    // Besides the line naming the engine, one line says why.
    let why: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("vm isolation: qemu"))
        .collect();
    assert_eq!(why.len(), 1, "{err}");
    assert!(
        why[0].contains("never shared live") && why[0].contains("(cw)"),
        "{err}"
    );
    assert!(env.root().join("volumes/shared/_data").is_dir());
}

/// Docker's backup pattern: `--volumes-from db` mounts db's volumes and binds at their
/// places (`:ro` makes them read-only), a `--rm` container so mounted never takes db's
/// anonymous volume with it, even with db stopped, and `rm -v db` does.
#[test]
fn volumes_from_mounts_another_containers_volumes_and_never_removes_them() {
    let env = TestEnv::new();
    let shared = env.root().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let bind = format!("{}:/shared:ro", shared.display());
    let out = env.run(&[
        "--name",
        "db",
        "-v",
        "/dbdata",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo precious > /dbdata/f",
    ]);
    ok(&out, "run db");
    let [anonymous] = volume_names(&env).try_into().expect("db's one volume");
    let out = env.run(&[
        "--rm",
        "--volumes-from",
        "db",
        "busybox",
        "sh",
        "-c",
        "cat /dbdata/f; echo added >> /dbdata/f; touch /shared/x || echo bind-ro",
    ]);
    assert_eq!(ok(&out, "run --volumes-from db"), "precious\nbind-ro\n");
    assert_eq!(
        volume_names(&env),
        vec![anonymous.clone()],
        "db's volume stays"
    );
    let out = env.run(&[
        "--rm",
        "--volumes-from",
        "db:ro",
        "busybox",
        "sh",
        "-c",
        "cat /dbdata/f; touch /dbdata/y || echo volume-ro",
    ]);
    assert_eq!(
        ok(&out, "run --volumes-from db:ro"),
        "precious\nadded\nvolume-ro\n"
    );
    let out = env.run(&["--rm", "--volumes-from", "nope", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    ok(
        &env.capsa(&[
            "create",
            "--name",
            "peek",
            "--volumes-from",
            "db:ro",
            "busybox",
            "true",
        ]),
        "create --volumes-from",
    );
    assert_eq!(
        env.inspect("peek", "{{json .HostConfig.VolumesFrom}}"),
        "[\"db:ro\"]"
    );
    ok(&env.capsa(&["rm", "-f", "peek"]), "rm -f peek");
    ok(&env.capsa(&["rm", "-v", "db"]), "rm -v db");
    assert!(volume_names(&env).is_empty(), "{:?}", volume_names(&env));
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "the bind stayed read-only"
    );
    env.assert_clean();
}

#[test]
fn a_volume_driver_other_than_local_is_recorded_and_never_makes_a_volume() {
    // Docker records `--volume-driver` and makes missing volumes with it; capsa has only
    // `local`, so a volume the container would make is refused and nothing is made.
    let env = TestEnv::new();
    ok(
        &env.capsa(&["volume", "create", "kept"]),
        "volume create kept",
    );
    ok(
        &env.capsa(&[
            "create",
            "--name",
            "plain",
            "--volume-driver",
            "foo",
            "busybox",
            "true",
        ]),
        "create --volume-driver foo",
    );
    let shown = ok(
        &env.capsa(&["inspect", "-f", "{{.HostConfig.VolumeDriver}}", "plain"]),
        "inspect",
    );
    assert_eq!(shown.trim(), "foo");
    // An existing volume is mounted as it is.
    ok(
        &env.capsa(&[
            "run",
            "--rm",
            "--volume-driver",
            "foo",
            "-v",
            "kept:/k",
            "busybox",
            "true",
        ]),
        "run with an existing volume",
    );
    for volume in [["-v", "fresh:/f"], ["-v", "/anon"]] {
        let out = env.capsa(
            &[
                &["create", "--volume-driver", "foo"][..],
                &volume[..],
                &["busybox", "true"][..],
            ]
            .concat(),
        );
        refused_in_one_line(&out, "a volume made with driver foo");
        assert!(
            text(&out.stderr).contains("plugin \"foo\" not found"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(volume_names(&env), ["kept"]);
}

#[test]
fn a_run_refused_at_start_leaves_no_anonymous_volume_behind() {
    let env = TestEnv::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN mkdir /data && echo data > /data/f\nVOLUME [\"/data\", \"/proc\"]\n",
    )
    .unwrap();
    let out = env.capsa(&[
        "build",
        "--cgroup-parent",
        env.cgroup_parent(),
        "-t",
        "procvol",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The image's VOLUME /proc is refused when the init mounts it, after /data's anonymous
    // volume was made and filled: again and again, each run must take its volume back.
    for args in [&["--rm"][..], &["-d"][..], &[][..]] {
        let mut all = args.to_vec();
        all.extend(["procvol", "true"]);
        let out = env.run(&all);
        refused_in_one_line(&out, &format!("{args:?}"));
        let err = text(&out.stderr);
        assert!(err.contains("/proc"), "{err}");
        assert_eq!(err.matches("container ").count(), 1, "named once: {err}");
    }
    assert!(volume_names(&env).is_empty(), "{:?}", volume_names(&env));
    assert!(volume_dirs(&env).is_empty(), "{:?}", volume_dirs(&env));
    env.assert_clean();
}
