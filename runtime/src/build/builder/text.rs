//! The text of instructions: argv of the shell and exec forms, a shell form's line
//! continuations, an instruction's line for the step banner, HEALTHCHECK's config.

use super::{step_error, BuildError};
use parse_dockerfile::{self as pd, Command, Instruction};
use serde_json::{json, Map, Value};

/// A command's argv: the exec form as written, the shell form through the stage's shell.
pub(super) fn argv(shell: &[String], cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Exec(a) => a.value.iter().map(|s| s.value.to_string()).collect(),
        Command::Shell(s) => {
            let mut a = shell.to_vec();
            a.push(join_continuations(s.value));
            a
        }
        _ => Vec::new(),
    }
}

/// A shell-form command with its line continuations joined, as Docker hands it to the
/// shell.
pub(super) fn join_continuations(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with('#') && !out.is_empty() {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) if lines.peek().is_some() => out.push_str(head),
            _ => {
                out.push_str(line);
                if lines.peek().is_some() {
                    out.push('\n');
                }
            }
        }
    }
    out.trim().to_string()
}

/// The text of the instruction whose keyword starts at `start` in `source`: its line with
/// the continuations joined (a heredoc's body left out).
pub(super) fn text_at(source: &str, start: usize) -> String {
    let rest = &source[start.min(source.len())..];
    let mut out = String::new();
    for line in rest.lines() {
        // Comment lines inside a continued instruction are dropped.
        if !out.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                out.push_str(head);
                out.push(' ');
            }
            None => {
                out.push_str(line);
                break;
            }
        }
    }
    collapse(&out)
}

/// White space runs inside an instruction's text as one space.
pub(super) fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn keyword_start(ins: &Instruction) -> usize {
    match ins {
        Instruction::Add(i) => i.add.span.start,
        Instruction::Arg(i) => i.arg.span.start,
        Instruction::Cmd(i) => i.cmd.span.start,
        Instruction::Copy(i) => i.copy.span.start,
        Instruction::Entrypoint(i) => i.entrypoint.span.start,
        Instruction::Env(i) => i.env.span.start,
        Instruction::Expose(i) => i.expose.span.start,
        Instruction::From(i) => i.from.span.start,
        Instruction::Healthcheck(i) => i.healthcheck.span.start,
        Instruction::Label(i) => i.label.span.start,
        Instruction::Maintainer(i) => i.maintainer.span.start,
        Instruction::Onbuild(i) => i.onbuild.span.start,
        Instruction::Run(i) => i.run.span.start,
        Instruction::Shell(i) => i.shell.span.start,
        Instruction::Stopsignal(i) => i.stopsignal.span.start,
        Instruction::User(i) => i.user.span.start,
        Instruction::Volume(i) => i.volume.span.start,
        Instruction::Workdir(i) => i.workdir.span.start,
        _ => 0,
    }
}

/// HEALTHCHECK as the config's `Healthcheck`: `Test` and the durations in nanoseconds.
pub(super) fn healthcheck(
    text: &str,
    shell: &[String],
    h: &pd::HealthcheckInstruction,
) -> Result<Value, BuildError> {
    let mut out = Map::new();
    match &h.arguments {
        pd::HealthcheckArguments::Cmd { arguments, .. } => {
            let test = match arguments {
                Command::Exec(a) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(a.value.iter().map(|s| s.value.to_string()));
                    t
                }
                Command::Shell(s) => vec!["CMD-SHELL".to_string(), join_continuations(s.value)],
                _ => vec!["NONE".to_string()],
            };
            let _ = shell;
            out.insert("Test".into(), json!(test));
        }
        _ => {
            out.insert("Test".into(), json!(["NONE"]));
        }
    }
    for flag in &h.options {
        let value = flag
            .value
            .as_ref()
            .map(|v| v.value.to_string())
            .unwrap_or_default();
        let key = match flag.name.value.as_ref() {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| step_error(text, format!("--retries={value}: not a number")))?;
                out.insert("Retries".into(), json!(n));
                continue;
            }
            other => return Err(step_error(text, format!("unknown flag --{other}"))),
        };
        let d = humantime::parse_duration(&value)
            .map_err(|e| step_error(text, format!("--{}={value}: {e}", flag.name.value)))?;
        out.insert(key.into(), json!(d.as_nanos() as u64));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_are_joined_as_docker_hands_them_to_the_shell() {
        assert_eq!(
            join_continuations("echo a \\\n  && echo b"),
            "echo a   && echo b"
        );
        assert_eq!(join_continuations("echo a"), "echo a");
    }
}
