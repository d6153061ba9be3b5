//! Shell completion. `capsa completion bash|zsh|fish` prints a small script that, at each
//! Tab, runs capsa itself with `CAPSA_COMPLETE=<shell>` and the words typed so far
//! (clap_complete's dynamic completion). capsa answers from its own command definition, so
//! verbs, flags and flag values are always those of the binary, and from the state root of
//! the moment: container, image and network names where a verb takes one.
//!
//! This suits the three shells alike: the per-shell part is clap_complete's few lines of
//! registration, and what to offer is decided in Rust, once. A script generated ahead of
//! time (clap_complete's `aot`) could list verbs and flags but not names, and a hand-written
//! hook per shell would have to re-parse the command line to know which argument is being
//! completed.

use crate::root::StateRoot;
use clap::{Args, ValueEnum};
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use clap_complete::{ArgValueCandidates, CompletionCandidate};
use std::path::PathBuf;

/// The environment variable through which a completion script asks capsa for candidates.
const COMPLETE_VAR: &str = "CAPSA_COMPLETE";

/// `completion` arguments.
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to print the completion script for.
    shell: Shell,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// What a positional argument names, by its id in the command definition.
#[derive(Clone, Copy)]
enum Names {
    Containers,
    Images,
    Networks,
}

fn names_for(arg_id: &str) -> Option<Names> {
    match arg_id {
        "container" | "containers" => Some(Names::Containers),
        "image" | "images" | "source" => Some(Names::Images),
        "network" | "networks" => Some(Names::Networks),
        _ => None,
    }
}

/// Answers a completion script's question and exits, when one is asked (the variable is
/// set); otherwise returns at once.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(command)
        .var(COMPLETE_VAR)
        .complete();
}

/// `completion SHELL`: the script that registers capsa's completion in that shell.
pub fn completion(args: CompletionArgs) -> i32 {
    let shell: &dyn EnvCompleter = match args.shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    let mut script = Vec::new();
    let written = shell
        .write_registration(COMPLETE_VAR, "capsa", "capsa", &completer(), &mut script)
        .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &script));
    match written {
        Ok(()) => 0,
        Err(e) => {
            super::print_error(format_args!("completion: {e}"));
            super::EXIT_FAILURE
        }
    }
}

/// The program the script runs: this binary as it was invoked (a bare name is looked up in
/// PATH at each Tab; a path is made absolute).
fn completer() -> String {
    let invoked = PathBuf::from(std::env::args_os().next().unwrap_or_else(|| "capsa".into()));
    if invoked.components().count() > 1 {
        if let Ok(dir) = std::env::current_dir() {
            return dir.join(invoked).to_string_lossy().into_owned();
        }
    }
    invoked.to_string_lossy().into_owned()
}

/// The command definition with name candidates on every argument that names a container,
/// an image or a network.
pub fn command() -> clap::Command {
    with_name_candidates(super::definition())
}

fn with_name_candidates(mut cmd: clap::Command) -> clap::Command {
    // `mut_arg` moves the argument to the end, and a positional's place is its order: every
    // positional is passed through, in order, so that they keep theirs.
    let positionals: Vec<clap::Id> = cmd.get_positionals().map(|a| a.get_id().clone()).collect();
    for id in positionals {
        let names = names_for(id.as_str());
        cmd = cmd.mut_arg(id, |a| match names {
            Some(names) => a.add(ArgValueCandidates::new(move || candidates(names))),
            None => a,
        });
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for sub in subs {
        cmd = cmd.mut_subcommand(sub, with_name_candidates);
    }
    cmd
}

fn candidates(names: Names) -> Vec<CompletionCandidate> {
    let Some(root) = state_root() else {
        return Vec::new();
    };
    let listed: Vec<String> = match names {
        Names::Containers => crate::container::ContainerStore::new(&root)
            .list()
            .into_iter()
            .map(|s| s.name)
            .collect(),
        Names::Images => crate::image::ImageStore::new(&root)
            .images()
            .unwrap_or_default()
            .into_iter()
            .flat_map(|i| i.names)
            .map(|n| crate::image::store::familiar_name(&n))
            .collect(),
        Names::Networks => crate::net::networks::NetworkStore::new(root.dir())
            .list()
            .into_iter()
            .map(|n| n.name)
            .collect(),
    };
    listed
        .into_iter()
        .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
        .map(CompletionCandidate::new)
        .collect()
}

/// The state root the words being completed name (`--root DIR`), else `CAPSA_ROOT`, else
/// the default; only one that exists (completing never creates a store).
fn state_root() -> Option<StateRoot> {
    let words: Vec<String> = std::env::args().collect();
    let named = words
        .iter()
        .enumerate()
        .find_map(|(i, w)| match w.strip_prefix("--root=") {
            Some(dir) => Some(dir.to_string()),
            None if w == "--root" => words.get(i + 1).cloned(),
            None => None,
        });
    let dir = named
        .or_else(|| std::env::var("CAPSA_ROOT").ok())
        .unwrap_or_else(|| crate::root::DEFAULT_ROOT.to_string());
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return None;
    }
    StateRoot::open(&dir).ok()
}
