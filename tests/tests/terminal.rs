//! `-t`/`-it`, `attach`, detach keys and `exec -it`, driven through tmux as a user would.

use std::time::Duration;

use capsa_tests::{eventually, text, TestEnv, Tmux};

fn line(env: &TestEnv, args: &str) -> String {
    format!("{} {args}; echo EXIT=$?; sleep 600", env.shell_prefix())
}

#[test]
fn run_it_types_resizes_interrupts_detaches_and_reattaches() {
    let env = TestEnv::new();
    let parent = env.cgroup_parent().to_string();
    let tmux = Tmux::start(
        &line(
            &env,
            &format!("run -it --name term --cgroup-parent {parent} busybox sh"),
        ),
        100,
        30,
    );
    tmux.wait_for("/ #");
    tmux.send(&["echo hello-$((40+2))", "Enter"]);
    tmux.wait_for("hello-42");
    // The pty has the window's size, and follows it.
    tmux.send(&["stty size", "Enter"]);
    tmux.wait_for("30 100");
    tmux.resize(120, 40);
    tmux.send(&["clear; stty size", "Enter"]);
    tmux.wait_for("40 120");
    // Ctrl-C reaches the foreground process inside, not capsa.
    tmux.send(&["sleep 600", "Enter"]);
    // A Ctrl-C typed before the shell's child has made itself the terminal's foreground
    // group goes to the shell, which ignores it, as on any terminal; the child shows as
    // `sleep` only after that (ash sets the foreground before exec).
    eventually(
        "sleep 600 in the container",
        Duration::from_secs(20),
        || text(&env.capsa(&["exec", "term", "ps"]).stdout).contains("sleep 600"),
    );
    tmux.send(&["C-c"]);
    tmux.wait_for("^C\n/ #");
    tmux.send(&["echo after-$((1+1))", "Enter"]);
    tmux.wait_for("after-2");
    // ctrl-p ctrl-q detaches; the container runs on.
    tmux.send(&["C-p", "C-q"]);
    tmux.wait_for("EXIT=0");
    assert!(
        tmux.screen().contains("read escape sequence\nEXIT=0"),
        "{}",
        tmux.screen()
    );
    assert!(
        env.ps_line("term").contains("Up "),
        "{}",
        env.ps_line("term")
    );
    // attach takes the terminal again; the shell's exit code comes back.
    let again = Tmux::start(&line(&env, "attach term"), 80, 24);
    again.send(&["stty size", "Enter"]);
    again.wait_for("24 80");
    again.send(&["exit 3", "Enter"]);
    again.wait_for("EXIT=3");
    assert!(env.ps_line("term").contains("Exited (3)"));
}

#[test]
fn custom_detach_keys_and_exec_it() {
    let env = TestEnv::new();
    assert!(env
        .run(&["-d", "--name", "host", "busybox", "sleep", "600"])
        .status
        .success());
    let tmux = Tmux::start(&line(&env, "exec -it --detach-keys ctrl-x host sh"), 70, 15);
    tmux.wait_for("/ #");
    tmux.send(&["stty size; echo pid=$$", "Enter"]);
    tmux.wait_for("15 70");
    tmux.wait_for("pid=");
    tmux.send(&["exit 5", "Enter"]);
    tmux.wait_for("EXIT=5");
    let parent = env.cgroup_parent().to_string();
    let run = Tmux::start(
        &line(
            &env,
            &format!(
                "run -it --detach-keys ctrl-x --name xkeys --cgroup-parent {parent} busybox sh"
            ),
        ),
        80,
        24,
    );
    run.wait_for("/ #");
    run.send(&["C-x"]);
    run.wait_for("EXIT=0");
    assert!(env.ps_line("xkeys").contains("Up "));
}

#[test]
fn a_terminal_without_a_user_still_runs_and_logs() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-t",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "tty; echo $TERM; ls -l /proc/self/fd/0; stat -c 'console=%t:%T' /dev/console; \
         stat -c 'pts0=%t:%T' /dev/pts/0; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let shown = text(&out.stdout);
    // Docker's terminal: the first pty of the container's own devpts, which /dev/console
    // is too (136:0, printed in hex).
    let lines: Vec<&str> = shown.lines().map(str::trim_end).collect();
    assert_eq!(lines.first(), Some(&"/dev/pts/0"), "{shown:?}");
    assert!(shown.contains("xterm"), "{shown:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("/proc/self/fd/0 -> /dev/pts/0")),
        "{shown:?}"
    );
    assert!(
        lines.contains(&"console=88:0") && lines.contains(&"pts0=88:0"),
        "{shown:?}"
    );
    assert!(env
        .run(&[
            "-dt",
            "--name",
            "bg",
            "busybox",
            "sh",
            "-c",
            "echo from-tty"
        ])
        .status
        .success());
    assert_eq!(text(&env.capsa(&["wait", "bg"]).stdout).trim(), "0");
    assert!(text(&env.capsa(&["logs", "bg"]).stdout).contains("from-tty"));
    assert!(env.capsa(&["rm", "bg"]).status.success());
    env.assert_clean();
}

/// The lines of `out`'s stdout, without the pty's carriage returns.
fn pty_lines(out: &std::process::Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[test]
fn exec_t_and_a_user_namespace_get_ptys_of_the_containers_own_devpts() {
    let env = TestEnv::new();
    assert!(env
        .run(&["-dt", "--name", "shell", "busybox", "sh"])
        .status
        .success());
    // The init holds /dev/pts/0; an exec gets the next one of the same devpts.
    let out = env.capsa(&["exec", "-t", "shell", "sh", "-c", "tty; ls /dev/pts"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = pty_lines(&out);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("/dev/pts/1"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains('0') && l.contains("ptmx")),
        "{lines:?}"
    );
    let out = env.run(&["--rm", "-t", "--userns", "auto", "busybox", "tty"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(pty_lines(&out), ["/dev/pts/0"]);
    assert!(env.capsa(&["rm", "-f", "shell"]).status.success());
    env.assert_clean();
}

#[test]
fn a_non_root_user_owns_its_terminal_and_can_reopen_it_by_name() {
    let env = TestEnv::new();
    // What `tty`-based prompts (sudo, ssh, passwd) do: reopen the terminal by its name.
    // Owned by root (mode 620), the open fails for uid 1000; as with runc it is the
    // process user's.
    let reopen = "stat -c 'owner=%u' $(tty); echo reopened > $(tty)";
    let out = env.run(&["--rm", "-t", "-u", "1000", "busybox", "sh", "-c", reopen]);
    assert!(
        out.status.success(),
        "run -t -u 1000: {}",
        text(&out.stdout)
    );
    assert_eq!(pty_lines(&out), ["owner=1000", "reopened"]);
    for userns in [&[][..], &["--userns", "auto"][..]] {
        let mut args = vec!["-d", "--name", "owner"];
        args.extend_from_slice(userns);
        args.extend(["busybox", "sleep", "600"]);
        assert!(env.run(&args).status.success(), "{userns:?}");
        let out = env.capsa(&["exec", "-t", "-u", "1000", "owner", "sh", "-c", reopen]);
        assert!(
            out.status.success(),
            "exec -t -u 1000 {userns:?}: {}",
            text(&out.stdout)
        );
        assert_eq!(pty_lines(&out), ["owner=1000", "reopened"], "{userns:?}");
        // Root's exec keeps a terminal of root's.
        let out = env.capsa(&["exec", "-t", "owner", "sh", "-c", reopen]);
        assert_eq!(pty_lines(&out), ["owner=0", "reopened"], "{userns:?}");
        assert!(env.capsa(&["rm", "-f", "owner"]).status.success());
    }
    env.assert_clean();
}

#[test]
fn exec_t_opens_only_the_ptmx_of_the_containers_devpts() {
    let env = TestEnv::new();
    // A /dev/pts the container can write to (a tmpfs over its devpts).
    assert!(env
        .run(&["-d", "--name", "hostile", "--tmpfs", "/dev/pts", "busybox", "sleep", "600"])
        .status
        .success());
    let exec = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        env.capsa(&all)
    };
    // A link to the host's /dev/ptmx: followed from the host's root, it would hand the
    // process a pty of the host's devpts. Resolved inside the container, it names
    // nothing there.
    assert!(exec(&["hostile", "ln", "-s", "/dev/ptmx", "/dev/pts/ptmx"])
        .status
        .success());
    let out = exec(&["-t", "hostile", "echo", "reached"]);
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("reached"));
    assert!(
        text(&out.stderr).contains("/dev/pts/ptmx"),
        "{}",
        text(&out.stderr)
    );
    // A ptmx node of the container's own making (c 5:2 on its tmpfs) is not a devpts's.
    assert!(exec(&[
        "hostile",
        "sh",
        "-c",
        "rm /dev/pts/ptmx && mknod /dev/pts/ptmx c 5 2"
    ])
    .status
    .success());
    let out = exec(&["-t", "hostile", "echo", "reached"]);
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("reached"));
    assert!(
        text(&out.stderr).contains("not the ptmx device of a devpts"),
        "{}",
        text(&out.stderr)
    );
    assert!(env.capsa(&["rm", "-f", "hostile"]).status.success());
    env.assert_clean();
}
