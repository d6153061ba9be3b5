//! `capsa build`: a multi-stage Dockerfile with every instruction, its effect checked by
//! running the image and reading its config; `.dockerignore`; the layer cache (hits, the
//! first miss after a changed file, `--no-cache`, reclaimed by `image prune`); `--target`
//! and build arguments; a context on stdin; bad input that leaves nothing behind; a
//! context whose symbolic links lead out (refused, the host file never opened); and
//! `docker build` (the legacy builder) through `capsa serve`.

use capsa_tests::registry::LocalRegistry;
use capsa_tests::{text, TestEnv};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `capsa build --cgroup-parent P ARGS CONTEXT`.
fn build(env: &TestEnv, args: &[&str], context: &Path) -> Output {
    let mut all = vec!["build", "--cgroup-parent", env.cgroup_parent()];
    all.extend_from_slice(args);
    let context = context.to_str().unwrap();
    all.push(context);
    env.capsa(&all)
}

/// A context directory with `files` (path, contents).
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    dir
}

/// Which steps printed `Using cache`: step number -> cached.
fn cached_steps(output: &str) -> Vec<(usize, bool)> {
    let mut steps: Vec<(usize, bool)> = Vec::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Step ") {
            let n = rest.split('/').next().unwrap().parse().unwrap();
            steps.push((n, false));
        } else if line.trim() == "---> Using cache" {
            steps.last_mut().expect("Using cache after a step").1 = true;
        }
    }
    steps
}

fn image_id(env: &TestEnv, name: &str) -> String {
    ok(&env.capsa(&["image", "inspect", "-f", "{{.Id}}", name]))
        .trim()
        .to_string()
}

fn run_out(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["--rm", "--network", "none"];
    all.extend_from_slice(args);
    ok(&env.run(&all))
}

/// A gzip tarball holding `inner/file.txt`.
fn bundle() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(6);
    tar.append_data(&mut h, "inner/file.txt", &b"inner\n"[..])
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

const EVERY_INSTRUCTION: &str = r#"
ARG BASE=busybox
FROM ${BASE} AS first
ARG WHO=nobody
ENV GREETING=hello DIR=app
WORKDIR /srv
WORKDIR $DIR
COPY src/ ./
COPY --chown=app:app --chmod=600 src/one.txt /owned/one.txt
ADD bundle.tar.gz /unpacked/
RUN echo "$GREETING $WHO" > /made.txt
RUN ["sh", "-c", "pwd > /where.txt"]
SHELL ["/bin/sh", "-ec"]
RUN echo shell-form \
    >> /made.txt

FROM busybox
COPY --from=first /made.txt /where.txt /out/
COPY --from=first /srv/app /tree
COPY --from=first /owned/one.txt /owned.txt
COPY --from=first /unpacked /unpacked
ENV MODE=prod
USER app
EXPOSE 8080 53/udp
LABEL stage=final "with space"="a b"
VOLUME ["/data"]
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
ONBUILD RUN echo triggered > /tmp/onbuild
ENTRYPOINT ["cat"]
CMD ["/out/made.txt"]
"#;

#[test]
fn a_multi_stage_build_applies_every_instruction() {
    let env = TestEnv::new();
    let ctx = context(&[
        ("build.Dockerfile", EVERY_INSTRUCTION),
        (".dockerignore", "**/*.log\n!src/keep.log\n"),
        ("src/one.txt", "one\n"),
        ("src/sub/two.txt", "two\n"),
        ("src/skip.log", "skipped\n"),
        ("src/keep.log", "kept\n"),
    ]);
    std::fs::write(ctx.path().join("bundle.tar.gz"), bundle()).unwrap();
    let iid = ctx.path().join("iid");
    let dockerfile = ctx.path().join("build.Dockerfile");
    let out = build(
        &env,
        &[
            "-t",
            "every:1",
            "-t",
            "every:2",
            "-f",
            dockerfile.to_str().unwrap(),
            "--build-arg",
            "WHO=tester",
            "--label",
            "from.cli=yes",
            "--iidfile",
            iid.to_str().unwrap(),
        ],
        ctx.path(),
    );
    let shown = ok(&out);
    assert!(shown.contains("Successfully tagged every:1"), "{shown}");

    // CMD and ENTRYPOINT; ARG (global, defaulted, overridden), ENV, both RUN forms, SHELL,
    // a continued line, COPY --from of files and of a directory's contents.
    assert_eq!(run_out(&env, &["every:1"]), "hello tester\nshell-form\n");
    let script = "cat /out/where.txt; ls /tree /tree/sub; stat -c '%u:%g %a' /owned.txt; \
                  cat /unpacked/inner/file.txt; id -u; echo $MODE";
    let seen = run_out(&env, &["--entrypoint", "", "every:1", "sh", "-c", script]);
    assert_eq!(
        seen,
        "/srv/app\n/tree:\nkeep.log\none.txt\nsub\n\n/tree/sub:\ntwo.txt\n1000:1000 600\ninner\n1000\nprod\n",
        ".dockerignore, --chown/--chmod, ADD's unpacking, USER"
    );

    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(id, image_id(&env, "every:1"));
    assert_eq!(id, image_id(&env, "every:2"));
    let config: Value = serde_json::from_str(&ok(&env.capsa(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config}}",
        "every:1",
    ])))
    .unwrap();
    assert_eq!(config["Entrypoint"], serde_json::json!(["cat"]));
    assert_eq!(config["Cmd"], serde_json::json!(["/out/made.txt"]));
    assert_eq!(config["User"], "app");
    assert!(config["Env"]
        .as_array()
        .unwrap()
        .contains(&"MODE=prod".into()));
    assert_eq!(
        config["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(
        config["Labels"],
        serde_json::json!({"stage": "final", "with space": "a b", "from.cli": "yes"})
    );
    assert_eq!(config["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(config["StopSignal"], "SIGUSR1");
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "true"])
    );
    assert_eq!(config["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(config["Healthcheck"]["Retries"], 2);
    assert_eq!(
        config["OnBuild"],
        serde_json::json!(["RUN echo triggered > /tmp/onbuild"])
    );
    assert!(config.get("Shell").is_none(), "SHELL stays in its stage");

    let history = ok(&env.capsa(&["history", "--no-trunc", "every:1"]));
    assert!(
        history.contains("/bin/sh -c #(nop)  ENTRYPOINT [\"cat\"]"),
        "{history}"
    );
    assert!(history.contains("/bin/sh -c #(nop) COPY dir:"), "{history}");
    // A child's FROM runs the triggers, and the child does not pass them on.
    let child = context(&[("Dockerfile", "FROM every:1\n")]);
    ok(&build(&env, &["-t", "child:1"], child.path()));
    let seen = run_out(
        &env,
        &["--entrypoint", "", "child:1", "cat", "/tmp/onbuild"],
    );
    assert_eq!(seen, "triggered\n");
    let onbuild = ok(&env.capsa(&["image", "inspect", "-f", "{{json .Config}}", "child:1"]));
    assert!(!onbuild.contains("OnBuild"), "{onbuild}");

    // The build's step images are hidden as Docker hides intermediate images.
    let listed = ok(&env.capsa(&["images", "-q"])).lines().count();
    let all = ok(&env.capsa(&["images", "-a", "-q"])).lines().count();
    assert!(all > listed + 10, "images {listed}, images -a {all}");
    assert!(env.container_dirs().is_empty(), "build containers left");
    env.assert_clean();
}

#[test]
fn the_cache_hits_until_the_first_changed_file_and_is_reclaimed_by_prune() {
    let env = TestEnv::new();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a.copy\nCOPY b.txt /b.txt\n\
             RUN cat /b.txt > /b.copy\nENV DONE=1\n",
        ),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
    ]);
    let first = ok(&build(&env, &["-t", "c:1"], ctx.path()));
    assert!(cached_steps(&first).iter().all(|(_, c)| !c), "{first}");
    let id = image_id(&env, "c:1");

    let again = ok(&build(&env, &["-t", "c:1"], ctx.path()));
    let steps = cached_steps(&again);
    assert_eq!(steps.len(), 6);
    assert!(steps[1..].iter().all(|(_, c)| *c), "{again}");
    assert_eq!(
        image_id(&env, "c:1"),
        id,
        "the same context builds the same image"
    );

    // A new time on a.txt is no change; new contents of b.txt are, from its COPY on.
    let a = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("a.txt"))
        .unwrap();
    a.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    std::fs::write(ctx.path().join("b.txt"), "B\n").unwrap();
    let changed = ok(&build(&env, &["-t", "c:1"], ctx.path()));
    let cached: Vec<bool> = cached_steps(&changed).iter().map(|(_, c)| *c).collect();
    assert_eq!(
        cached,
        [false, true, true, false, false, false],
        "{changed}"
    );
    assert_eq!(
        run_out(&env, &["c:1", "cat", "/a.copy", "/b.copy"]),
        "a\nB\n"
    );

    let fresh = ok(&build(&env, &["--no-cache", "-t", "c:2"], ctx.path()));
    assert!(cached_steps(&fresh).iter().all(|(_, c)| !c), "{fresh}");
    assert_ne!(image_id(&env, "c:2"), image_id(&env, "c:1"));

    ok(&env.capsa(&["rmi", "c:2"]));
    ok(&env.capsa(&["image", "prune", "-f"]));
    let after = ok(&build(&env, &["-t", "c:1"], ctx.path()));
    assert!(
        cached_steps(&after).iter().all(|(_, c)| !c),
        "prune reclaims the cache: {after}"
    );
    // `builder prune` forgets the cache and removes its unnamed step images; named
    // images stay.
    let pruned = ok(&env.capsa(&["builder", "prune", "-f"]));
    assert!(pruned.contains("Deleted build cache objects:"), "{pruned}");
    let listed_all = ok(&env.capsa(&["images", "-a", "-q"])).lines().count();
    assert_eq!(listed_all, 2, "busybox and c:1 are left");
    let rebuilt = ok(&build(&env, &["-t", "c:1"], ctx.path()));
    assert!(cached_steps(&rebuilt).iter().all(|(_, c)| !c), "{rebuilt}");

    // Two contexts that differ only where a link's target meets the next name (`a -> xy`
    // with `z`, `a -> x` with `yz`) are two cache keys, not one.
    let copy_all = "FROM busybox\nCOPY . /ctx\n";
    let first = context(&[("Dockerfile", copy_all), ("z", "")]);
    std::os::unix::fs::symlink("xy", first.path().join("a")).unwrap();
    let second = context(&[("Dockerfile", copy_all), ("yz", "")]);
    std::os::unix::fs::symlink("x", second.path().join("a")).unwrap();
    ok(&build(&env, &["-t", "l:1"], first.path()));
    let out = ok(&build(&env, &["-t", "l:2"], second.path()));
    assert!(cached_steps(&out).iter().all(|(_, c)| !c), "{out}");
    assert_eq!(
        run_out(&env, &["l:2", "sh", "-c", "readlink /ctx/a; ls /ctx"]),
        "x\nDockerfile\na\nyz\n"
    );

    // What a RUN step's name lookups saw keys it: a layer built with --add-host is not
    // another build's.
    let resolve = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN grep pkgs.example /etc/hosts > /resolved || true\n",
    )]);
    ok(&build(
        &env,
        &["--add-host", "pkgs.example:10.66.66.66", "-t", "h:1"],
        resolve.path(),
    ));
    let out = ok(&build(&env, &["-t", "h:2"], resolve.path()));
    assert!(cached_steps(&out).iter().all(|(_, c)| !c), "{out}");
    assert_eq!(run_out(&env, &["h:2", "cat", "/resolved"]), "");
    env.assert_clean();
}

#[test]
fn target_stages_build_args_and_a_context_on_stdin() {
    let env = TestEnv::new();
    // FROM an image the store lacks pulls it (from a registry on 127.0.0.1).
    let registry = LocalRegistry::start(&env);
    let remote = format!("{}/team/bb:1", registry.host());
    ok(&env.capsa(&["tag", "busybox", &remote]));
    ok(&env.capsa(&["push", &remote]));
    ok(&env.capsa(&["rmi", &remote]));
    let pulling = context(&[("Dockerfile", &format!("FROM {remote}\nENV FROM=registry\n"))]);
    let shown = ok(&build(&env, &["-t", "pulled:1"], pulling.path()));
    assert!(shown.contains(&format!("Pulling {remote}")), "{shown}");
    assert_eq!(image_id(&env, &remote), image_id(&env, "busybox"));
    // Present now: pulled again only with --pull.
    let shown = ok(&build(&env, &["-t", "pulled:1"], pulling.path()));
    assert!(!shown.contains("Pulling"), "{shown}");
    let shown = ok(&build(&env, &["--pull", "-t", "pulled:1"], pulling.path()));
    assert!(shown.contains(&format!("Pulling {remote}")), "{shown}");

    let dockerfile = "ARG V=global\nFROM busybox AS a\nARG V\nARG W=wdefault\n\
                      RUN echo \"$V $W $http_proxy\" > /v.txt\nRUN <<EOF\necho heredoc > /h\nEOF\n\
                      FROM a AS b\nRUN false\n";
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let out = build(
        &env,
        &[
            "--target",
            "a",
            "--build-arg",
            "W=given",
            "--build-arg",
            "UNUSED=x",
            "--build-arg",
            "http_proxy=http://127.0.0.1:3128",
            "-t",
            "t:a",
        ],
        ctx.path(),
    );
    let shown = ok(&out);
    assert!(
        shown.contains("[Warning] One or more build-args [UNUSED] were not consumed"),
        "{shown}"
    );
    assert!(!shown.contains("RUN false"), "{shown}");
    assert_eq!(
        run_out(&env, &["t:a", "cat", "/v.txt"]),
        "global given http://127.0.0.1:3128\n"
    );
    assert_eq!(run_out(&env, &["t:a", "cat", "/h"]), "heredoc\n");
    let history = ok(&env.capsa(&["history", "--no-trunc", "t:a"]));
    assert!(
        history.contains("|2 V=global W=given /bin/sh -c echo"),
        "{history}"
    );
    assert!(
        !history.contains("3128"),
        "proxy arguments stay out of the history: {history}"
    );

    let out = build(&env, &["--target", "nope"], ctx.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("failed to reach build target nope"));

    // `-` takes the context as a tar on stdin; -f names the Dockerfile inside it.
    let mut tar = tar::Builder::new(Vec::new());
    let file = "FROM busybox\nCOPY hello /hello\n";
    for (name, data) in [("ctx.Dockerfile", file), ("hello", "from stdin\n")] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let cgroup = env.cgroup_parent().to_string();
    let args = [
        "build",
        "--cgroup-parent",
        &cgroup,
        "-f",
        "ctx.Dockerfile",
        "-q",
        "-t",
        "s:1",
        "-",
    ];
    let out = env.capsa_with_stdin(&args, &tar);
    let id = ok(&out);
    assert_eq!(id.trim(), image_id(&env, "s:1"), "-q prints the ID alone");
    assert_eq!(run_out(&env, &["s:1", "cat", "/hello"]), "from stdin\n");

    // A sparse file in a context on stdin (GNU tar -S: a 1 GiB hole in a few KiB of tar)
    // is refused: a COPY would write its holes whole into a layer.
    let dir = context(&[("Dockerfile", "FROM busybox\nCOPY big /big\n")]);
    std::fs::File::create(dir.path().join("big"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-S", "-cf", "-", "-C"])
        .arg(dir.path())
        .args(["Dockerfile", "big"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    assert!(tar.stdout.len() < 64 << 10, "{} bytes", tar.stdout.len());
    let out = env.capsa_with_stdin(
        &["build", "--cgroup-parent", &cgroup, "-t", "s:2", "-"],
        &tar.stdout,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("big is a sparse file (refused)"), "{err}");
    env.assert_clean();
}

/// Watches `path` for opens (inotify), to tell whether a build read it.
struct OpenWatch {
    fd: i32,
}

impl OpenWatch {
    fn new(path: &Path) -> OpenWatch {
        // SAFETY: plain syscalls on a descriptor this struct owns.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            assert!(libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) >= 0);
            OpenWatch { fd }
        }
    }

    fn opened(&self) -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a buffer of the length given.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        n > 0
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this struct owns.
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn bad_input_is_one_line_and_leaves_nothing_and_links_never_lead_out() {
    let env = TestEnv::new();
    let outside = tempfile::tempdir().unwrap();
    let secret: PathBuf = outside.path().join("secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let ctx = context(&[("dir/plain", "plain\n")]);
    std::os::unix::fs::symlink(&secret, ctx.path().join("link")).unwrap();
    std::os::unix::fs::symlink(&secret, ctx.path().join("dir/inner-link")).unwrap();
    let watch = OpenWatch::new(&secret);

    let cases = [
        (
            "FROM busybox\nRUN echo partial > /p && exit 3\n",
            "The command '/bin/sh -c echo partial > /p && exit 3' returned a non-zero code: 3",
        ),
        ("FROM busybox\nFROBNICATE x\n", "line 2"),
        (
            "FROM busybox\nCOPY missing /x\n",
            "missing: no such file or directory in the build context",
        ),
        (
            "FROM busybox\nCOPY --chown=ghost dir /d\n",
            "COPY --chown=ghost dir /d: --chown ghost: no user \"ghost\" in the image",
        ),
        (
            "FROM busybox\nCOPY --from=nostage /a /x\n",
            "--from=nostage: no stage or image of that name",
        ),
        (
            "FROM busybox\nADD http://127.0.0.1:9/x /x\n",
            "ADD of a URL (http://127.0.0.1:9/x) is refused",
        ),
        (
            "FROM busybox\nCOPY link /x\n",
            "link: the path leads outside the build context (refused)",
        ),
        (
            "FROM busybox\nCOPY ../../../../etc/passwd /x\n",
            "no such file or directory in the build context",
        ),
        // Pulled when missing: nothing listens there (and nothing leaves this machine).
        ("FROM 127.0.0.1:9/nosuch\n", "FROM 127.0.0.1:9/nosuch: "),
        // An image's account files are read by a host-side process outside the container's
        // limits: a FIFO there would hang the build, a device node have it read the host's
        // device (here /dev/zero: without a bound, all the host's memory).
        (
            "FROM busybox\nRUN rm /etc/passwd && mkfifo /etc/passwd\nCOPY --chown=app dir /d\n",
            "/etc/passwd in the image: not a regular file",
        ),
        (
            "FROM busybox\nRUN rm /etc/group && mknod /etc/group c 1 5\nCOPY --chown=0:app dir /d\n",
            "/etc/group in the image: not a regular file",
        ),
    ];
    for (dockerfile, says) in cases {
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let out = build(&env, &["-t", "bad:1"], ctx.path());
        assert_eq!(
            out.status.code(),
            Some(1),
            "{dockerfile}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{dockerfile}: {err}");
        assert!(
            !ok(&env.capsa(&["images"])).contains("bad"),
            "no half image tagged"
        );
        assert!(
            env.container_dirs().is_empty(),
            "{dockerfile}: a build container is left"
        );
    }
    // A link inside a copied directory is copied as a link, never followed.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nCOPY dir /d\n").unwrap();
    ok(&build(&env, &["-t", "links:1"], ctx.path()));
    let seen = run_out(
        &env,
        &[
            "links:1",
            "sh",
            "-c",
            "readlink /d/inner-link; cat /d/inner-link || true",
        ],
    );
    assert_eq!(seen, format!("{}\n", secret.display()));
    assert!(
        !watch.opened(),
        "the host file outside the context was opened"
    );
    env.assert_clean();
}

#[test]
fn docker_build_goes_through_capsa_serve() {
    let env = TestEnv::new();
    let api = env.serve();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY msg /msg\nRUN cat /msg > /copy\nCMD [\"cat\", \"/copy\"]\n",
        ),
        ("msg", "through docker\n"),
    ]);
    let dir = ctx.path().to_str().unwrap();
    let build = |args: &[&str]| {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        all.push(dir);
        let mut cmd = api.docker_command(&all);
        cmd.env("DOCKER_BUILDKIT", "0");
        capsa_tests::run_bounded(cmd, std::time::Duration::from_secs(120))
    };
    let shown = ok(&build(&["-t", "viadocker:1"]));
    assert!(shown.contains("Step 3/4 : RUN cat /msg > /copy"), "{shown}");
    assert!(shown.contains("Successfully tagged viadocker:1"), "{shown}");
    assert_eq!(run_out(&env, &["viadocker:1"]), "through docker\n");
    let again = ok(&build(&["-q"]));
    assert_eq!(
        again.trim(),
        image_id(&env, "viadocker:1"),
        "cached, the same image"
    );

    // `-f -`: the CLI adds the Dockerfile to the context's stream, which it then ends
    // without tar's closing blocks.
    let mut cmd = api.docker_command(&["build", "-q", "-f", "-", dir]);
    cmd.env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"FROM busybox\nCOPY msg /from-stdin\n",
    )
    .unwrap();
    let id = ok(&child.wait_with_output().unwrap());
    assert_eq!(
        run_out(&env, &[id.trim(), "cat", "/from-stdin"]),
        "through docker\n"
    );

    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN exit 7\n").unwrap();
    let out = build(&["-t", "broken:1"]);
    // The CLI exits with the step's code, which the answer's errorDetail carries.
    assert_eq!(out.status.code(), Some(7));
    assert!(
        text(&out.stderr).contains("The command '/bin/sh -c exit 7' returned a non-zero code: 7"),
        "{}",
        text(&out.stderr)
    );
    assert!(env.container_dirs().is_empty());
    // `docker builder prune` (POST /build/prune): the cache goes, the named image stays.
    let pruned = ok(&api.docker(&["builder", "prune", "-f"]));
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY msg /msg\nRUN cat /msg > /copy\nCMD [\"cat\", \"/copy\"]\n",
    )
    .unwrap();
    let rebuilt = ok(&build(&["-t", "viadocker:1"]));
    assert!(!rebuilt.contains("Using cache"), "{rebuilt}");
    drop(api);
    env.assert_clean();
}

#[test]
fn run_steps_in_a_vm_run_on_the_guest_kernel() {
    let env = TestEnv::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN uname -r > /kernel\nRUN test -s /kernel && exit 5\n",
    )]);
    let out = build(&env, &["--isolation", "vm", "-t", "invm:1"], ctx.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("'/bin/sh -c test -s /kernel && exit 5' returned a non-zero code: 5"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        env.container_dirs().is_empty(),
        "the failed VM's container is left"
    );
    // The first step's image is in the cache: the guest kernel wrote it.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN uname -r > /kernel\n",
    )
    .unwrap();
    let shown = ok(&build(
        &env,
        &["--isolation", "vm", "-t", "invm:1"],
        ctx.path(),
    ));
    assert!(shown.contains("---> Using cache"), "{shown}");
    let kernel = run_out(&env, &["invm:1", "cat", "/kernel"]);
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        kernel.starts_with("6.1.") && kernel != host,
        "guest kernel {kernel}, host {host}"
    );
    env.assert_clean();
}

/// A tar archive of `files` (path, contents): a build context as a request body.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap()
}

/// What docker-py and other Engine API clients parse in `POST /build`'s answer, as
/// dockerd's legacy builder sends it (each step and its line end, a RUN step's stderr in
/// red escapes, `aux`, then `Successfully built`/`tagged` last; a failed RUN's exit code
/// and command), and the parameters they send: `shmsize`, `extrahosts`, `cachefrom`, a
/// network by ID, the first of two `dockerfile` values (docker-py sends an outside
/// Dockerfile's name and then its text).
#[test]
fn post_build_answers_as_dockerd_and_applies_its_parameters() {
    use serde_json::json;
    let env = TestEnv::new();
    let api = env.serve();
    let post = |query: &str, files: &[(&str, &str)]| -> Vec<Value> {
        let path = format!("/build?{query}");
        let (status, body) = api.request("POST", &path, Some(&tar_of(files)));
        assert_eq!(status, 200, "{query}: {}", text(&body));
        text(&body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let shown =
        |lines: &[Value]| -> String { lines.iter().filter_map(|l| l["stream"].as_str()).collect() };

    let dockerfile = "FROM busybox\nRUN grep -w /dev/shm /proc/mounts; grep extra.test /etc/hosts; echo oops >&2\n";
    let lines = post(
        "t=shapes&shmsize=2097152&extrahosts=extra.test:192.0.2.7&dockerfile=Custom&dockerfile=Other",
        &[("Custom", dockerfile), ("Other", "FROM scratch\n")],
    );
    assert_eq!(lines[0], json!({"stream": "Step 1/2 : FROM busybox"}));
    assert_eq!(lines[1], json!({"stream": "\n"}));
    assert!(
        lines.contains(&json!({"stream": "\u{1b}[91moops\n\u{1b}[0m"})),
        "{lines:?}"
    );
    let out = shown(&lines);
    assert!(out.contains("size=2048k"), "{out}");
    assert!(out.contains("192.0.2.7\textra.test"), "{out}");
    let id = image_id(&env, "shapes");
    let n = lines.len();
    assert_eq!(lines[n - 3], json!({"aux": {"ID": id}}));
    assert_eq!(
        lines[n - 2],
        json!({"stream": format!("Successfully built {}\n", &id[7..19])})
    );
    assert_eq!(
        lines[n - 1],
        json!({"stream": "Successfully tagged shapes:latest\n"})
    );

    let lines = post("t=broken", &[("Dockerfile", "FROM busybox\nRUN exit 3\n")]);
    let message = "The command '/bin/sh -c exit 3' returned a non-zero code: 3";
    assert_eq!(
        lines.last(),
        Some(&json!({"errorDetail": {"code": 3, "message": message}, "error": message}))
    );

    // `cachefrom`: a cached step counts only if it is an image named there or an
    // ancestor of one.
    let cached = [("Dockerfile", "FROM busybox\nENV A=1\nRUN echo one > /one\n")];
    post("t=first", &cached);
    let using = |query: &str| {
        let lines = post(query, &cached);
        let n = lines
            .iter()
            .filter(|l| l["stream"] == " ---> Using cache\n")
            .count();
        (n, shown(&lines))
    };
    let (hits, out) = using("t=second&cachefrom=%5B%22first%22%5D");
    assert_eq!(hits, 2, "{out}");
    let (hits, out) = using("t=third&cachefrom=%5B%22nosuch%22%5D");
    assert_eq!(hits, 0, "{out}");

    // A user-defined network given by ID: the step joins it and finds its members.
    let net = ok(&env.capsa(&["network", "create", "buildnet"]));
    ok(&env.capsa(&[
        "run",
        "-d",
        "--name",
        "target",
        "--network",
        "buildnet",
        "--network-alias",
        "pingtarget",
        "busybox",
        "sleep",
        "600",
    ]));
    let pinging = [("Dockerfile", "FROM busybox\nRUN ping -c1 -W5 pingtarget\n")];
    let lines = post(&format!("t=joined&networkmode={}", net.trim()), &pinging);
    assert_eq!(
        lines.last(),
        Some(&json!({"stream": "Successfully tagged joined:latest\n"})),
        "{lines:?}"
    );
    let lines = post("t=alone&networkmode=none&nocache=1", &pinging);
    assert_eq!(lines.last().unwrap()["errorDetail"]["code"], 1, "{lines:?}");
    ok(&env.capsa(&["rm", "-f", "target"]));
    ok(&env.capsa(&["network", "rm", "buildnet"]));
    drop(api);
    env.assert_clean();
}
