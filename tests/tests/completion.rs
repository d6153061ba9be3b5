//! Shell completion: `capsa completion bash|zsh|fish` prints a script each shell accepts,
//! and completing through it offers this store's container and image names where a verb
//! takes them (the script asks capsa itself at each Tab).

use capsa_tests::{capsa_bin, run_bounded, text, TestEnv};
use std::process::{Command, Output};
use std::time::Duration;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `shell -c script` with capsa's directory first in PATH and `CAPSA_ROOT` set to the
/// test's store.
fn in_shell(env: &TestEnv, shell: &str, script: &str) -> Output {
    let bin_dir = capsa_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(shell);
    cmd.arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("CAPSA_ROOT", env.root())
        .env("HOME", env.root());
    run_bounded(cmd, Duration::from_secs(60))
}

/// What bash offers for the last word of `words`, through the script `capsa completion
/// bash` printed.
fn bash_candidates(env: &TestEnv, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let last = words.len() - 1;
    let script = format!(
        r#"source <(capsa completion bash) || exit 9
COMP_WORDS=({words}); COMP_CWORD={last}
_clap_complete_capsa capsa "${{COMP_WORDS[{last}]}}" "${{COMP_WORDS[{prev}]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = quoted.join(" "),
        prev = last - 1,
    );
    ok(&in_shell(env, "bash", &script))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_verbs_and_the_names_in_the_store() {
    let env = TestEnv::new();
    ok(&env.create(&["--name", "webby", "--network", "none", "busybox", "true"]));
    ok(&env.capsa(&["tag", "busybox", "example/tool:2"]));

    let verbs = bash_candidates(&env, &["capsa", "cont"]);
    assert_eq!(verbs, ["container"]);
    let containers = bash_candidates(&env, &["capsa", "container", "start", ""]);
    assert!(containers.contains(&"webby".to_string()), "{containers:?}");
    let containers = bash_candidates(&env, &["capsa", "rm", "we"]);
    assert_eq!(containers, ["webby"]);
    let images = bash_candidates(&env, &["capsa", "run", "--rm", ""]);
    for want in ["busybox:latest", "example/tool:2"] {
        assert!(images.contains(&want.to_string()), "{want}: {images:?}");
    }
    assert!(!images.contains(&"webby".to_string()), "{images:?}");
    let images = bash_candidates(&env, &["capsa", "image", "history", "exa"]);
    assert_eq!(images, ["example/tool:2"]);
    // A store named on the command line is the one listed.
    let other = TestEnv::new();
    let root = other.root().to_str().unwrap();
    let none = bash_candidates(&env, &["capsa", "--root", root, "start", ""]);
    assert!(!none.contains(&"webby".to_string()), "{none:?}");
    ok(&env.capsa(&["rm", "-f", "webby"]));
    env.assert_clean();
}

#[test]
fn zsh_and_fish_load_their_scripts_and_complete_names() {
    let env = TestEnv::new();
    ok(&env.create(&["--name", "fishy", "--network", "none", "busybox", "true"]));
    // fish: the script registers a completion that asks capsa; `complete -C` runs it.
    let fish = ok(&in_shell(
        &env,
        "fish",
        "capsa completion fish | source; complete -C 'capsa container logs '",
    ));
    assert!(fish.lines().any(|l| l.starts_with("fishy")), "{fish}");
    let fish = ok(&in_shell(
        &env,
        "fish",
        "capsa completion fish | source; complete -C 'capsa image rm bu'",
    ));
    assert!(
        fish.lines().any(|l| l.starts_with("busybox:latest")),
        "{fish}"
    );
    // zsh: the script defines its completion function and registers it with compdef.
    let zsh = ok(&in_shell(
        &env,
        "zsh",
        "autoload -U compinit && compinit -u -D && source <(capsa completion zsh) && print -r -- ${_comps[capsa]}",
    ));
    assert_eq!(zsh.trim(), "_clap_dynamic_completer_capsa", "{zsh}");
    // What that function runs at a Tab after `capsa container logs `.
    let asked = ok(&in_shell(
        &env,
        "zsh",
        "CAPSA_COMPLETE=zsh _CLAP_COMPLETE_INDEX=3 capsa -- capsa container logs ''",
    ));
    assert!(asked.lines().any(|l| l == "fishy"), "{asked}");
    ok(&env.capsa(&["rm", "-f", "fishy"]));
    env.assert_clean();
}

#[test]
fn an_unknown_shell_is_refused() {
    let env = TestEnv::new();
    let out = env.capsa(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("tcsh"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim_end().lines().count(), 1);
}
