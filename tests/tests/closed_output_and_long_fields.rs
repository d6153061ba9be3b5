//! rt1 #12: a command whose output is closed early ends quietly, as other command-line
//! tools do (it panicked: "failed printing to stdout: Broken pipe"); a user string or
//! working directory too long to name anything is refused in one line naming the field,
//! before anything is created (a 70000-byte user gave a JSON parse error of the init's
//! message: "EOF while parsing a string at line 1 column 65536").

use capsa_tests::{text, TestEnv};
use std::io::Read;
use std::process::Stdio;

/// `capsa ARGS`, its output read for one byte and then closed; returns (stderr, status).
fn with_output_closed_early(env: &TestEnv, args: &[&str]) -> (String, std::process::ExitStatus) {
    let mut cmd = env.command(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is closed here: the rest of the output (far more than a pipe holds)
    // meets a pipe without a reader.
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (err, child.wait().unwrap())
}

#[test]
fn a_closed_output_ends_a_command_quietly() {
    let env = TestEnv::new();
    let out = env.create(&["--name", "cc", "--network", "none", "busybox", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // About 1 MB of JSON: 200 copies of the container's record.
    let mut args = vec!["inspect"];
    args.extend(std::iter::repeat_n("cc", 200));
    let (err, status) = with_output_closed_early(&env, &args);
    assert_eq!(err, "", "nothing on stderr: {err}");
    assert_ne!(status.code(), Some(101), "a panic's status: {status:?}");
    // The same for `image inspect` and `logs`.
    let mut args = vec!["image", "inspect"];
    args.extend(std::iter::repeat_n("busybox", 200));
    let (err, _) = with_output_closed_early(&env, &args);
    assert_eq!(err, "", "image inspect: {err}");
    assert!(env.capsa(&["rm", "-f", "cc"]).status.success());
    env.assert_clean();
}

fn refused_in_one_line(env: &TestEnv, args: &[&str], needles: &[&str]) {
    let out = env.run(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.len() < 300,
        "the field is not quoted whole: {} bytes",
        err.len()
    );
    for n in needles {
        assert!(err.contains(n), "{n:?} in {err}");
    }
    env.assert_clean();
}

#[test]
fn fields_too_long_to_name_anything_are_refused_in_one_line() {
    let env = TestEnv::new();
    let long = "a".repeat(70_000);
    let common = ["--rm", "--network", "none"];
    let with = |flag: &'static str, value: &str| -> Vec<String> {
        common
            .iter()
            .map(|s| s.to_string())
            .chain([
                flag.to_string(),
                value.to_string(),
                "busybox".into(),
                "true".into(),
            ])
            .collect()
    };
    let strs = |v: &Vec<String>| v.iter().map(String::as_str).collect::<Vec<_>>().join("\0");
    for (args, needles) in [
        (
            with("-u", &long),
            vec!["-u \"aaaa", "user name is 70000 bytes long"],
        ),
        (
            with("-u", &format!("0:{long}")),
            vec!["-u \"0:aaa", "group name is 70000 bytes long"],
        ),
        (
            with("-w", &format!("/{long}")),
            vec!["-w \"/aaa", "70001 bytes long"],
        ),
    ] {
        let joined = strs(&args);
        let args: Vec<&str> = joined.split('\0').collect();
        refused_in_one_line(&env, &args, &needles);
    }
    // The image's own User: the init refuses it, and its message reaches the CLI whole.
    let tar = capsa_tests::busybox_tarball().to_str().unwrap().to_string();
    let user = format!("USER {long}");
    let out = env.capsa(&["import", "-c", &user, &tar, "longuser"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    refused_in_one_line(
        &env,
        &["--rm", "--network", "none", "longuser", "true"],
        &["user \"aaaa", "user name is 70000 bytes long"],
    );
}
