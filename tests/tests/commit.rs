//! `capsa commit` and `capsa export` (and their `container` forms, and the docker CLI's
//! through `capsa serve`): a container's changes become an image whose layer holds its
//! new files and its deletions; a running container is paused for the capture and runs on
//! afterwards; `-c`/`-m`/`-a` reach the config and history; `export` writes the flattened
//! root that `import` takes back.

use capsa_tests::{text, TestEnv};
use std::time::{SystemTime, UNIX_EPOCH};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `run --rm --network none IMAGE ARGS...`, its stdout.
fn run_image(env: &TestEnv, image: &str, args: &[&str]) -> String {
    let mut all = vec!["--rm", "--network", "none", image];
    all.extend_from_slice(args);
    ok(&env.run(&all))
}

fn is_image_id(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The entries of `image`'s top layer as `save` writes it (an OCI layout).
fn top_layer_entries(env: &TestEnv, image: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.tar");
    ok(&env.capsa(&["save", "-o", file.to_str().unwrap(), image]));
    let mut blobs = std::collections::HashMap::new();
    let mut index = Vec::new();
    for entry in tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
    {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        match name.strip_prefix("blobs/sha256/") {
            Some(hex) => {
                blobs.insert(hex.to_string(), data);
            }
            None if name == "index.json" => index = data,
            None => {}
        }
    }
    let blob = |digest: &serde_json::Value| {
        let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
        blobs[hex].clone()
    };
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(&index["manifests"][0]["digest"])).unwrap();
    let top = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        top["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gz = blob(&top["digest"]);
    tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[test]
fn commit_of_a_running_container_captures_its_files_and_deletions_and_it_runs_on() {
    let env = TestEnv::new();
    let since = now().to_string();
    ok(&env.run(&[
        "-d",
        "--name",
        "live",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]));
    // The changes are made and finished before the commit (exec returns when they are).
    ok(&env.capsa(&[
        "exec",
        "live",
        "sh",
        "-c",
        "echo written > /new.txt; rm /etc/group; rm -r /home; mkdir -p /home/fresh/deep; \
         ln -s /new.txt /home/fresh/link",
    ]));
    let id = ok(&env.capsa(&["commit", "live", "snap:1"]));
    let id = id.trim();
    assert!(is_image_id(id), "{id}");
    assert_eq!(
        ok(&env.capsa(&["image", "inspect", "-f", "{{.Id}}", "snap:1"])).trim(),
        id
    );
    // The workload was frozen for the capture and runs on afterwards.
    assert_eq!(
        env.inspect("live", "{{.State.Status}} {{.State.Paused}}"),
        "running false"
    );
    ok(&env.capsa(&["exec", "live", "true"]));
    let until = now().to_string();
    let actions = ok(&env.capsa(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=live",
        "--format",
        "{{.Action}}",
    ]));
    let actions: Vec<&str> = actions
        .lines()
        .filter(|a| matches!(*a, "pause" | "unpause" | "commit"))
        .collect();
    assert_eq!(actions, ["pause", "unpause", "commit"]);

    // The new image holds the file written, not the ones deleted; an opaque directory
    // hides what the image had below it.
    let script = "cat /new.txt; test -e /etc/group && echo group-still-there; ls /home; \
                  readlink /home/fresh/link; test -d /home/fresh/deep && echo deep; head -n 1 /etc/passwd";
    assert_eq!(
        run_image(&env, "snap:1", &["sh", "-c", script]),
        "written\nfresh\n/new.txt\ndeep\nroot:x:0:0:root:/root:/bin/sh\n"
    );
    // The layer is in the form registries carry: deletions as `.wh.` entries, the
    // replaced directory marked opaque, gzip-compressed.
    let entries = top_layer_entries(&env, "snap:1");
    for want in [
        "etc/.wh.group",
        "home",
        "home/.wh..wh..opq",
        "home/fresh/link",
        "new.txt",
    ] {
        assert!(entries.iter().any(|e| e == want), "{want} in {entries:?}");
    }
    assert!(
        !entries.iter().any(|e| e.starts_with("proc")),
        "{entries:?}"
    );
    // One layer on top of the parent's; the parent is untouched.
    let layers = |image: &str| {
        ok(&env.capsa(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", image]))
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(layers("snap:1"), layers("busybox") + 1);
    // Its parent is the image it was made from, as Docker's local `Parent` says.
    let busybox_id = ok(&env.capsa(&["image", "inspect", "-f", "{{.Id}}", "busybox"]));
    let parent = ok(&env.capsa(&["image", "inspect", "-f", "{{.Parent}}", "snap:1"]));
    assert_eq!(parent.trim(), busybox_id.trim());
    assert_eq!(
        run_image(&env, "busybox", &["cat", "/etc/group"])
            .lines()
            .count(),
        4
    );

    // --pause=false leaves the workload running throughout: no pause is told. (The whole
    // test's events are read again: a window of whole seconds could hold the first
    // commit's too.)
    ok(&env.capsa(&["container", "commit", "--pause=false", "live", "snap:2"]));
    let until = now().to_string();
    let actions = ok(&env.capsa(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=live",
        "--format",
        "{{.Action}}",
    ]));
    let actions: Vec<&str> = actions
        .lines()
        .filter(|a| matches!(*a, "pause" | "unpause" | "commit"))
        .collect();
    assert_eq!(actions, ["pause", "unpause", "commit", "commit"]);
    assert_eq!(run_image(&env, "snap:2", &["cat", "/new.txt"]), "written\n");
    ok(&env.capsa(&["rm", "-f", "live"]));
}

#[test]
fn changes_message_and_author_show_in_inspect_and_history_and_bad_ones_are_named() {
    let env = TestEnv::new();
    ok(&env.run(&[
        "--name",
        "done",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo from-commit > /msg",
    ]));
    let images_before = ok(&env.capsa(&["images", "-q"]));
    let id = ok(&env.capsa(&[
        "commit",
        "-c",
        r#"CMD ["cat", "/msg"]"#,
        "-c",
        "ENV GREETING=hello",
        "-c",
        "LABEL team=blue",
        "-m",
        "saved the message",
        "-a",
        "Ann <ann@example.com>",
        "done",
        "withmsg",
    ]));
    assert!(is_image_id(id.trim()), "{id}");
    assert_eq!(run_image(&env, "withmsg", &[]), "from-commit\n");
    assert_eq!(
        run_image(
            &env,
            "withmsg:latest",
            &["sh", "-c", "echo $GREETING $PATH"]
        ),
        "hello /bin\n"
    );
    let inspected = ok(&env.capsa(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Cmd}}|{{.Config.Labels.team}}|{{.Author}}|{{.Comment}}",
        "withmsg",
    ]));
    assert_eq!(
        inspected.trim(),
        r#"["cat","/msg"]|blue|Ann <ann@example.com>|saved the message"#
    );
    // The newest step, under the header: the container's command and the message.
    let history = ok(&env.capsa(&["history", "--no-trunc", "withmsg"]));
    let step = history.lines().nth(1).unwrap_or_default();
    assert!(
        step.contains("sh -c echo from-commit > /msg") && step.ends_with("saved the message"),
        "{history}"
    );
    assert!(step.starts_with(id.trim()), "{history}");

    // A change commit does not take is named, and no image is made.
    let out = env.capsa(&["commit", "-c", "RUN echo hi", "done", "refused"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("\"RUN echo hi\""),
        "{}",
        text(&out.stderr)
    );
    let out = env.capsa(&["commit", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "capsa: No such container: nosuch");
    let digest = format!("pinned@sha256:{}", "a".repeat(64));
    let out = env.capsa(&["commit", "done", &digest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a tag cannot carry a digest"),
        "{}",
        text(&out.stderr)
    );
    let images_after = ok(&env.capsa(&["images", "-q"]));
    assert_eq!(
        images_after.lines().count(),
        images_before.lines().count() + 1
    );
    let out = env.capsa(&["image", "inspect", "refused"]);
    assert!(!out.status.success());

    // A container that changed nothing: no layer is added, only a step in the history.
    ok(&env.create(&["--name", "fresh", "--network", "none", "busybox", "true"]));
    ok(&env.capsa(&["commit", "-m", "nothing", "fresh", "same"]));
    let layers =
        |image: &str| ok(&env.capsa(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", image]));
    assert_eq!(layers("same"), layers("busybox"));
    let history = ok(&env.capsa(&["history", "same"]));
    assert_eq!(history.lines().count(), 3, "{history}");
    assert!(
        history.lines().nth(1).unwrap().ends_with("nothing"),
        "{history}"
    );
}

#[test]
fn export_of_a_stopped_and_a_running_container_imports_back_and_runs() {
    let env = TestEnv::new();
    ok(&env.run(&[
        "--name",
        "stopped",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo kept > /root/kept; rm /etc/group",
    ]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stopped.tar");
    ok(&env.capsa(&["export", "-o", file.to_str().unwrap(), "stopped"]));
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "root/kept"), "{names:?}");
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(!names.iter().any(|n| n == "etc/group"), "{names:?}");
    ok(&env.capsa(&["import", file.to_str().unwrap(), "flat:stopped"]));
    assert_eq!(
        run_image(&env, "flat:stopped", &["cat", "/root/kept"]),
        "kept\n"
    );

    // A running container, exported to stdout, imported from stdin.
    ok(&env.run(&[
        "-d",
        "--name",
        "running",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]));
    ok(&env.capsa(&["exec", "running", "sh", "-c", "echo live > /live"]));
    let out = env.capsa(&["container", "export", "running"]);
    let tar = out.stdout.clone();
    ok(&out);
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    // /proc and /sys are there as directories, without the kernel's files in them.
    assert!(names.iter().any(|n| n == "proc"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("proc/")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("sys/")), "{names:?}");
    ok(&env.capsa_with_stdin(&["import", "-", "flat:running"], &tar));
    assert_eq!(run_image(&env, "flat:running", &["cat", "/live"]), "live\n");

    let out = env.capsa(&["export", "-o", file.to_str().unwrap(), "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "capsa: No such container: nosuch");
    ok(&env.capsa(&["rm", "-f", "running"]));
}

#[test]
fn the_docker_cli_commits_and_exports_through_capsa_serve() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]);
    api.docker_ok(&["exec", "web", "sh", "-c", "echo via-api > /api.txt"]);
    let id = api.docker_ok(&[
        "commit",
        "-c",
        "ENV FROM_API=1",
        "-c",
        r#"CMD ["cat", "/api.txt"]"#,
        "-m",
        "api commit",
        "-a",
        "Bob",
        "web",
        "fromapi:v1",
    ]);
    assert!(is_image_id(id.trim()), "{id}");
    assert_eq!(
        api.docker_ok(&["inspect", "-f", "{{.State.Running}}", "web"])
            .trim(),
        "true"
    );
    let inspected = api.docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}|{{.Author}}|{{.Comment}}|{{json .Config.Cmd}}",
        "fromapi:v1",
    ]);
    assert_eq!(
        inspected.trim(),
        format!(r#"{}|Bob|api commit|["cat","/api.txt"]"#, id.trim())
    );
    assert_eq!(run_image(&env, "fromapi:v1", &[]), "via-api\n");
    assert_eq!(
        run_image(&env, "fromapi:v1", &["sh", "-c", "echo $FROM_API"]),
        "1\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.tar");
    api.docker_ok(&["export", "-o", file.to_str().unwrap(), "web"]);
    let id = api.docker_ok(&["import", file.to_str().unwrap(), "flat:api"]);
    assert!(is_image_id(id.trim()), "{id}");
    assert_eq!(
        run_image(&env, "flat:api", &["cat", "/api.txt"]),
        "via-api\n"
    );

    let out = api.docker(&["commit", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("No such container: nosuch"),
        "{}",
        text(&out.stderr)
    );
    let out = api.docker(&["commit", "-c", "FROM busybox", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("FROM busybox"),
        "{}",
        text(&out.stderr)
    );
    let out = api.docker(&["export", "-o", file.to_str().unwrap(), "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("No such container: nosuch"),
        "{}",
        text(&out.stderr)
    );
    api.docker_ok(&["rm", "-f", "web"]);
}

#[test]
fn a_vm_container_commits_and_exports_through_its_guest_agent() {
    let env = TestEnv::new();
    let since = now().to_string();
    ok(&env.run(&[
        "-d",
        "--isolation",
        "vm",
        "--name",
        "guest",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]));
    ok(&env.capsa(&[
        "exec",
        "guest",
        "sh",
        "-c",
        "echo in-guest > /guest.txt; rm /etc/group; rm -r /home; mkdir -p /home/vm",
    ]));
    let id = ok(&env.capsa(&["commit", "-m", "from a vm", "guest", "vmsnap"]));
    assert!(is_image_id(id.trim()), "{id}");
    assert_eq!(
        env.inspect("guest", "{{.State.Status}} {{.State.Paused}}"),
        "running false"
    );
    ok(&env.capsa(&["exec", "guest", "true"]));
    let until = now().to_string();
    let actions = ok(&env.capsa(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=guest",
        "--format",
        "{{.Action}}",
    ]));
    let actions: Vec<&str> = actions
        .lines()
        .filter(|a| matches!(*a, "pause" | "unpause" | "commit"))
        .collect();
    assert_eq!(actions, ["pause", "unpause", "commit"]);
    // The layer the guest wrote runs in either isolation; here on the host, which is quick.
    let entries = top_layer_entries(&env, "vmsnap");
    for want in ["etc/.wh.group", "home/.wh..wh..opq", "guest.txt"] {
        assert!(entries.iter().any(|e| e == want), "{want} in {entries:?}");
    }
    assert!(
        !entries
            .iter()
            .any(|e| e.starts_with("proc") || e.starts_with("dev/")),
        "{entries:?}"
    );
    assert_eq!(
        run_image(
            &env,
            "vmsnap",
            &[
                "sh",
                "-c",
                "cat /guest.txt; ls /home; test -e /etc/group || echo gone"
            ]
        ),
        "in-guest\nvm\ngone\n"
    );

    // export reads the guest's root through the agent; import takes it back.
    let out = env.capsa(&["export", "guest"]);
    let tar = out.stdout.clone();
    ok(&out);
    ok(&env.capsa_with_stdin(&["import", "-", "flat:vm"], &tar));
    assert_eq!(
        run_image(&env, "flat:vm", &["cat", "/guest.txt"]),
        "in-guest\n"
    );
    ok(&env.capsa(&["rm", "-f", "guest"]));
    env.assert_clean();
}

/// As with Docker, the new image starts from the container's own config: the command it
/// ran, its `-e` variables, `-w`, `-u` and labels; an image's ENTRYPOINT stays the
/// Entrypoint and only the container's arguments become the Cmd; `-c` still wins.
#[test]
fn the_image_takes_the_containers_own_command_environment_and_entrypoint() {
    let env = TestEnv::new();
    ok(&env.run(&[
        "--name",
        "own",
        "--network",
        "none",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "--label",
        "team=red",
        "busybox",
        "sh",
        "-c",
        "echo \"$FOO in $(pwd)\"",
    ]));
    ok(&env.capsa(&["commit", "own", "owncfg"]));
    let shown = |image: &str, field: &str| {
        ok(&env.capsa(&[
            "image",
            "inspect",
            "-f",
            &format!("{{{{json .Config.{field}}}}}"),
            image,
        ]))
        .trim()
        .to_string()
    };
    assert_eq!(
        shown("owncfg", "Cmd"),
        r#"["sh","-c","echo \"$FOO in $(pwd)\""]"#
    );
    assert_eq!(shown("owncfg", "WorkingDir"), r#""/tmp""#);
    assert_eq!(shown("owncfg", "Labels"), r#"{"team":"red"}"#);
    let envs = shown("owncfg", "Env");
    assert!(
        envs.contains("FOO=bar") && !envs.contains("HOSTNAME"),
        "{envs}"
    );
    assert_eq!(run_image(&env, "owncfg", &[]), "bar in /tmp\n");

    // An image with an entrypoint, run with arguments.
    ok(&env.capsa(&[
        "commit",
        "-c",
        r#"ENTRYPOINT ["echo", "pre"]"#,
        "-c",
        r#"CMD ["default"]"#,
        "own",
        "withentry",
    ]));
    ok(&env.run(&[
        "--name",
        "args",
        "--network",
        "none",
        "withentry",
        "one",
        "two",
    ]));
    ok(&env.capsa(&["commit", "args", "fromargs"]));
    assert_eq!(shown("fromargs", "Entrypoint"), r#"["echo","pre"]"#);
    assert_eq!(shown("fromargs", "Cmd"), r#"["one","two"]"#);
    assert_eq!(run_image(&env, "fromargs", &[]), "pre one two\n");
    // `-c` over the container's own.
    ok(&env.capsa(&["commit", "-c", r#"CMD ["three"]"#, "args", "changed"]));
    assert_eq!(run_image(&env, "changed", &[]), "pre three\n");
}
