//! Go templates in every `--format`/`-f`, as Docker users write them: `range` over a
//! container's networks, `index` into labels, `json`, `table` headers aligned as Docker
//! aligns them, one JSON object per line; and a bad template as one clear line (Docker's
//! words, exit 1) that changes nothing.

use capsa_tests::{busybox_tarball, eventually, text, TestEnv};
use std::time::Duration;

/// Imports busybox again as `labelled`, with the label `team=db`.
fn import_labelled(env: &TestEnv) {
    let tar = busybox_tarball().to_str().unwrap();
    let out = env.capsa(&[
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV PATH=/bin",
        "-c",
        "LABEL team=db",
        tar,
        "labelled",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `capsa ARGS`, which must succeed; its standard output.
fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.capsa(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn inspect_templates_reach_networks_labels_and_mounts() {
    let env = TestEnv::new();
    import_labelled(&env);
    let data = tempfile::tempdir().unwrap();
    let out = env.run(&[
        "-d",
        "--name",
        "web",
        "-v",
        &format!("{}:/data", data.path().display()),
        "labelled",
        "sleep",
        "60",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // range over the networks map, with and without variables.
    let ip = env.inspect("web", "{{.NetworkSettings.IPAddress}}");
    assert!(ip.starts_with("10.88."), "{ip}");
    assert_eq!(
        env.inspect(
            "web",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        ),
        ip
    );
    assert_eq!(
        env.inspect(
            "web",
            "{{range $name, $n := .NetworkSettings.Networks}}{{$name}}={{$n.Gateway}}{{end}}"
        ),
        "bridge=10.88.0.1"
    );
    // index into labels: the image's label, "" for a missing one (a Go string map), and
    // `<no value>` for a missing key reached as a field.
    assert_eq!(
        env.inspect(
            "web",
            r#"{{index .Config.Labels "team"}}|{{index .Config.Labels "nope"}}|{{.Config.Labels.nope}}"#
        ),
        "db||<no value>"
    );
    assert_eq!(
        ok(
            &env,
            &[
                "image",
                "inspect",
                "-f",
                r#"{{index .Config.Labels "team"}}"#,
                "labelled"
            ]
        ),
        "db\n"
    );
    // json of a list of structs.
    let mounts: serde_json::Value =
        serde_json::from_str(&env.inspect("web", "{{json .Mounts}}")).unwrap();
    assert_eq!(mounts[0]["Destination"], "/data", "{mounts}");
    assert_eq!(mounts[0]["RW"], true, "{mounts}");
    // The PID is the workload's: a live process on this host.
    let pid = env.inspect("web", "{{.State.Pid}}");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "{pid}"
    );
    // Conditions, functions, pipelines, printf.
    assert_eq!(
        env.inspect(
            "web",
            r#"{{if .State.Running}}up{{else}}down{{end}} {{len .Config.Cmd}} {{join .Config.Cmd ","}} {{.Name | upper}} {{printf "%s:%03d" .State.Status .RestartCount}}"#
        ),
        "up 2 sleep,60 /WEB running:000"
    );
    assert_eq!(
        ok(
            &env,
            &[
                "network",
                "inspect",
                "-f",
                "{{.Name}} {{.Driver}}",
                "bridge"
            ]
        ),
        "bridge bridge\n"
    );
    assert!(env.capsa(&["rm", "-f", "web"]).status.success());
    env.assert_clean();
}

#[test]
fn list_formats_take_tables_json_and_templates() {
    let env = TestEnv::new();
    import_labelled(&env);
    assert!(env
        .run(&["--name", "done", "--network", "none", "labelled", "true"])
        .status
        .success());
    assert!(env
        .run(&[
            "-d",
            "--name",
            "up",
            "--network",
            "none",
            "busybox",
            "sleep",
            "60"
        ])
        .status
        .success());

    // A template per row, Docker's functions in it.
    assert_eq!(
        ok(
            &env,
            &[
                "ps",
                "-a",
                "--format",
                "{{.Names}}|{{.State}}|{{len .Names}}|{{upper .Names}}|{{.Labels}}"
            ]
        ),
        "up|running|2|UP|\ndone|exited|4|DONE|team=db\n"
    );
    // table: Docker's titles, columns as wide as their widest cell + 3, at least 10.
    assert_eq!(
        ok(
            &env,
            &[
                "ps",
                "-a",
                "--format",
                "table {{.Names}}\\t{{.State}}\\t{{.Image}}"
            ]
        ),
        "NAMES     STATE     IMAGE\n\
         up        running   busybox\n\
         done      exited    labelled\n"
    );
    // json: one object per line, Docker's field names.
    let lines: Vec<serde_json::Value> = ok(&env, &["ps", "-a", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["Names"], "up");
    assert_eq!(lines[1]["Image"], "labelled");
    assert_eq!(lines[1]["Labels"], "team=db");
    let each: serde_json::Value =
        serde_json::from_str(&ok(&env, &["ps", "--format", "{{json .}}"])).unwrap();
    assert_eq!(each["State"], "running");

    // images.
    let id = ok(&env, &["image", "inspect", "-f", "{{.Id}}", "labelled"]);
    let short = &id.trim().trim_start_matches("sha256:")[..12];
    assert_eq!(
        ok(
            &env,
            &[
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.ID}}",
                "labelled"
            ]
        ),
        format!("labelled:latest {short}\n")
    );
    let table = ok(
        &env,
        &["images", "--format", "table {{.Repository}}\\t{{.Tag}}"],
    );
    let mut lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.remove(0), "REPOSITORY   TAG", "{table}");
    lines.sort();
    assert_eq!(
        lines,
        ["busybox      latest", "labelled     latest"],
        "{table}"
    );
    let image: serde_json::Value =
        serde_json::from_str(ok(&env, &["images", "--format", "json", "labelled"]).trim()).unwrap();
    assert_eq!(image["ID"], short);
    assert!(image["Size"].as_str().unwrap().ends_with('B'), "{image}");

    // network ls and system df.
    assert_eq!(
        ok(
            &env,
            &["network", "ls", "--format", "table {{.Name}}\\t{{.Driver}}"]
        ),
        "NAME      DRIVER\nbridge    bridge\nhost      host\nnone      null\n"
    );
    assert_eq!(
        ok(
            &env,
            &[
                "system",
                "df",
                "--format",
                "{{.Type}}={{.TotalCount}}/{{.Active}}"
            ]
        ),
        "Images=2/2\nContainers=2/1\nLocal Volumes=0/0\n"
    );

    assert_eq!(
        ok(
            &env,
            &[
                "info",
                "--format",
                "{{.Containers}} {{.ContainersRunning}} {{.Images}}"
            ]
        ),
        "2 1 2\n"
    );

    // stats --no-stream: the header Docker prints, the row of the one container.
    eventually("a stats row", Duration::from_secs(20), || {
        ok(
            &env,
            &[
                "stats",
                "--no-stream",
                "--format",
                "table {{.Name}}\\t{{.PIDs}}",
                "up",
            ],
        ) == "NAME      PIDS\nup        1\n"
    });
    assert!(env.capsa(&["rm", "-f", "up", "done"]).status.success());
    env.assert_clean();
}

#[test]
fn a_bad_template_is_one_line_in_dockers_words_and_changes_nothing() {
    let env = TestEnv::new();
    assert!(env
        .run(&[
            "-d",
            "--name",
            "up",
            "--network",
            "none",
            "busybox",
            "sleep",
            "60"
        ])
        .status
        .success());
    let listing = || {
        let mut all: Vec<String> = walkdir(env.root());
        all.sort();
        all
    };
    let before = listing();
    let cases: [(&[&str], &str); 8] = [
        (
            &["ps", "--format", "{{foo}}"],
            r#"capsa: template parsing error: template: :1: function "foo" not defined"#,
        ),
        (
            &["ps", "--format", "{{.Nope}}"],
            r#"capsa: template parsing error: template: :1:2: executing "" at <.Nope>: can't evaluate field Nope in type *formatter.ContainerContext"#,
        ),
        (
            &["images", "--format", "{{.Repository"],
            "capsa: template parsing error: template: :1: unclosed action",
        ),
        (
            &["network", "ls", "--format", "{{range}}"],
            "capsa: template parsing error: template: :1: missing value for range",
        ),
        (
            &["stats", "--no-stream", "--format", "{{.Name | nope}}", "up"],
            r#"capsa: template parsing error: template: :1: function "nope" not defined"#,
        ),
        (
            &["inspect", "-f", "{{.Nope}}", "up"],
            r#"capsa: Template parsing error: template: :1:2: executing "" at <.Nope>: map has no entry for key "Nope""#,
        ),
        (
            &["inspect", "-f", "{{index .Config.Cmd 9}}", "up"],
            r#"capsa: Template parsing error: template: :1:2: executing "" at <index .Config.Cmd 9>: error calling index: index out of range: 9"#,
        ),
        (
            &["inspect", "-f", "{{if .State.Running}}", "up"],
            "capsa: Template parsing error: template: :1: unexpected EOF in if",
        ),
    ];
    for (args, message) in cases {
        let out = env.capsa(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stderr), format!("{message}\n"), "{args:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
    assert_eq!(listing(), before, "a bad template changed the store");
    assert!(env.capsa(&["rm", "-f", "up"]).status.success());
    env.assert_clean();
}

/// Every path under `dir` but the lock files (a read takes a lock, creating its file).
fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if rel == "locks" || rel.starts_with("locks/") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
            out.push(rel);
        }
    }
    out
}
