//! `capsa run` in the foreground: output, exit codes, image config, flags.

use capsa_tests::{text, TestEnv};

#[test]
fn output_passes_through_and_exit_codes_are_the_workloads() {
    let env = TestEnv::new();
    let out = env.run(&["--rm", "busybox", "echo", "hello"]);
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(out.status.code(), Some(0));
    let out = env.run(&["--rm", "busybox", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stderr), "oops\n");
    env.assert_clean();
}

#[test]
fn missing_command_is_127_and_non_executable_is_126() {
    let env = TestEnv::new();
    let out = env.run(&["--rm", "busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("no-such-command"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["--rm", "busybox", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
    env.assert_clean();
}

#[test]
fn image_cmd_and_env_are_used_when_none_given() {
    let env = TestEnv::new();
    // CMD ["sh"] with stdin at /dev/null: sh reads EOF and exits 0.
    let out = env.run(&["--rm", "busybox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(env.sh(&[], "echo $PATH"), "/bin\n");
}

#[test]
fn env_workdir_user_and_hostname_arrive() {
    let env = TestEnv::new();
    let env_file = env.root().join("vars.env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\nOVERRIDDEN=file\n").unwrap();
    let out = env.sh(
        &[
            "-e",
            "A=1",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "OVERRIDDEN=flag",
            "-w",
            "/srv/work",
            "-u",
            "app",
            "--hostname",
            "probe-host",
        ],
        "echo $A $FROM_FILE $OVERRIDDEN; pwd; id -u; id -g; id -G; hostname; echo $HOME $HOSTNAME",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1 yes flag");
    assert_eq!(lines[1], "/srv/work");
    assert_eq!(lines[2], "1000");
    assert_eq!(lines[3], "1000");
    assert!(
        lines[4].split(' ').any(|g| g == "10"),
        "supplementary groups: {}",
        lines[4]
    );
    assert_eq!(lines[5], "probe-host");
    assert_eq!(lines[6], "/home/app probe-host");
    assert_eq!(env.sh(&["-u", "4242:4343"], "id -u; id -g"), "4242\n4343\n");
}

#[test]
fn stdin_passes_through_with_i() {
    let env = TestEnv::new();
    let out = env.capsa_with_stdin(
        &[
            "run",
            "--rm",
            "-i",
            "--cgroup-parent",
            env.cgroup_parent(),
            "busybox",
            "cat",
        ],
        b"through stdin\n",
    );
    assert_eq!(text(&out.stdout), "through stdin\n");
}

#[test]
fn writes_stay_in_the_container_layer() {
    let env = TestEnv::new();
    let out = env.run(&[
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo secret > /etc/leak && cat /etc/leak",
    ]);
    assert_eq!(text(&out.stdout), "secret\n");
    let again = env.run(&["--rm", "busybox", "cat", "/etc/leak"]);
    assert_ne!(
        again.status.code(),
        Some(0),
        "a write leaked into the image"
    );
    let layers = env.root().join("layers");
    let leaked = std::process::Command::new("find")
        .arg(&layers)
        .args(["-name", "leak"])
        .output()
        .unwrap();
    assert!(
        text(&leaked.stdout).is_empty(),
        "the image layer changed: {}",
        text(&leaked.stdout)
    );
}

#[test]
fn volumes_bind_host_directories_read_write_and_read_only() {
    let env = TestEnv::new();
    let host = env.root().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from host\n").unwrap();
    let rw = format!("{}:/data", host.display());
    assert_eq!(
        env.sh(&["-v", &rw], "cat /data/in.txt; echo back > /data/out.txt"),
        "from host\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "back\n"
    );
    let ro = format!("{}:/data:ro", host.display());
    let out = env.run(&["--rm", "-v", &ro, "busybox", "sh", "-c", "echo x > /data/x"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!host.join("x").exists());
}

#[test]
fn read_only_root_refuses_writes_but_tmpfs_accepts() {
    let env = TestEnv::new();
    let out = env.run(&["--rm", "--read-only", "busybox", "touch", "/newfile"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("Read-only"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        env.sh(
            &["--read-only", "--tmpfs", "/scratch"],
            "echo ok > /scratch/f && cat /scratch/f"
        ),
        "ok\n"
    );
}

#[test]
fn image_entrypoint_workdir_and_user_are_honoured() {
    let env = TestEnv::new();
    let tar = capsa_tests::busybox_tarball().to_str().unwrap();
    let out = env.capsa(&[
        "import",
        "-c",
        r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
        "-c",
        r#"CMD ["id -u; pwd"]"#,
        "-c",
        "WORKDIR /srv",
        "-c",
        "USER app",
        "-c",
        "ENV PATH=/bin",
        tar,
        "configured",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&env.run(&["--rm", "configured"]).stdout),
        "1000\n/srv\n"
    );
    // Arguments replace CMD but keep ENTRYPOINT; -u and -w override the image.
    assert_eq!(
        text(&env.run(&["--rm", "configured", "echo override"]).stdout),
        "override\n"
    );
    assert_eq!(
        text(
            &env.run(&["--rm", "-u", "0", "-w", "/tmp", "configured"])
                .stdout
        ),
        "0\n/tmp\n"
    );
    assert_eq!(
        text(
            &env.run(&["--rm", "--entrypoint", "echo", "configured", "plain"])
                .stdout
        ),
        "plain\n"
    );
}

#[test]
fn import_reads_standard_input() {
    let env = TestEnv::new();
    let mut cmd = env.command(&["import", "-", "fromstdin:1"]);
    cmd.stdin(std::fs::File::open(capsa_tests::busybox_tarball()).unwrap());
    let out = capsa_tests::run_bounded(cmd, std::time::Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&env.run(&["--rm", "fromstdin:1", "echo", "ok"]).stdout),
        "ok\n"
    );
}
