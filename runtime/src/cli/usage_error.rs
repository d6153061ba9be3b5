//! A command line that does not parse: one line naming the cause and where to read more,
//! exit 125 as Docker's CLI does for flags it does not know. Help and version requests are
//! printed as clap renders them (help with Docker's wording), exit 0.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::CommandFactory;

/// Prints `err` and returns the exit code.
pub fn report(err: clap::Error) -> i32 {
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Help is rendered from the definition with Docker's wording (see `definition`).
            let shown = super::definition()
                .try_get_matches_from(super::command_line())
                .err()
                .unwrap_or(err);
            let _ = shown.print();
            0
        }
        _ => {
            super::print_error(one_line(&err));
            super::EXIT_ENGINE_ERROR
        }
    }
}

/// The cause in one line: `unknown command: capsa container frob (see 'capsa container
/// --help')`.
fn one_line(err: &clap::Error) -> String {
    let command = command_path();
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    let cause = match err.kind() {
        ErrorKind::InvalidSubcommand => {
            let typed = context(ContextKind::InvalidSubcommand).unwrap_or_default();
            let mut cause = format!("unknown command: {command} {typed}");
            if let Some(near) = context(ContextKind::SuggestedSubcommand) {
                cause.push_str(&format!(" (did you mean '{near}'?)"));
            }
            cause
        }
        ErrorKind::MissingRequiredArgument => {
            let missing = match err.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(v)) => v.join(", "),
                _ => String::new(),
            };
            format!("missing {missing}")
        }
        ErrorKind::MissingSubcommand => "a command is required".to_string(),
        ErrorKind::UnknownArgument => {
            let typed = context(ContextKind::InvalidArg).unwrap_or_default();
            format!("unknown flag: {typed}")
        }
        _ => clap_message(err),
    };
    format!("{cause}; see '{command} --help'")
}

/// clap's own message without its `error: ` prefix, usage and tips: its first line.
fn clap_message(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The words of the command the error is about (`capsa container`): the subcommands typed,
/// found by walking the command definition along the command line.
fn command_path() -> String {
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut path = vec!["capsa".to_string()];
    let mut current = &cmd;
    let mut words = super::command_line()
        .into_iter()
        .map(|w| w.to_string_lossy().into_owned())
        .skip(1);
    while let Some(word) = words.next() {
        if let Some(flag) = word.strip_prefix('-') {
            // A flag's value is the next word unless given as `--flag=value`.
            if !flag.contains('=') && takes_value(current, flag) {
                words.next();
            }
            continue;
        }
        match current.find_subcommand(&word) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                current = sub;
            }
            None => break,
        }
    }
    path.join(" ")
}

/// Whether `flag` (`-x` or `--long` without its first dash) takes a value in `cmd`.
fn takes_value(cmd: &clap::Command, flag: &str) -> bool {
    let arg = match flag.strip_prefix('-') {
        Some(long) => cmd.get_arguments().find(|a| a.get_long() == Some(long)),
        None => {
            let mut chars = flag.chars();
            let short = chars.next();
            // `-n5` carries its value; `-it` is two switches.
            if chars.next().is_some() {
                return false;
            }
            cmd.get_arguments().find(|a| a.get_short() == short)
        }
    };
    arg.is_some_and(|a| a.get_action().takes_values())
}
