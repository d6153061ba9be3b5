//! `capsa-escape all [--marker PATH:TOKEN] [--only a,b] [--scratch DIR]`
//! `capsa-escape watch-exec --processes N --timeout SECS --expect EXE --out FILE`
//! `capsa-escape show FILE` | `capsa-escape noop`: see the library's doc.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use capsa_escape::context::Context;
use capsa_escape::findings::{Findings, VERSION};
use capsa_escape::probes::{self, Env};
use capsa_escape::window::{self, Watch};

const USAGE: &str = "usage: capsa-escape all [--marker PATH:TOKEN] [--only NAME,...] [--scratch DIR]\n       capsa-escape watch-exec --processes N --timeout SECS --expect EXE --out FILE\n       capsa-escape show FILE | capsa-escape noop";

/// The value after `flag`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn main() -> ExitCode {
    // Before anything here opens a descriptor.
    let inherited = probes::inherited_fds();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("all") => {
            let env = Env {
                marker: flag(&args, "--marker").and_then(|m| {
                    let (path, token) = m.split_once(':')?;
                    Some((PathBuf::from(path), token.to_string()))
                }),
                inherited,
                scratch: PathBuf::from(flag(&args, "--scratch").unwrap_or("/tmp")),
            };
            let only: Vec<String> = flag(&args, "--only")
                .map(|o| o.split(',').map(String::from).collect())
                .unwrap_or_default();
            if let Some(bad) = only.iter().find(|o| probes::find(o).is_none()) {
                eprintln!("capsa-escape: no probe named {bad:?}");
                return ExitCode::from(2);
            }
            let findings = Findings {
                capsa_escape: VERSION,
                context: Context::gather(),
                probes: probes::run(&env, &only),
            };
            println!("{}", findings.to_line());
            ExitCode::SUCCESS
        }
        Some("watch-exec") => watch_exec(&args),
        Some("show") => match flag(&args, "show").map(std::fs::read_to_string) {
            Some(Ok(text)) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Some(Err(e)) => {
                eprintln!("capsa-escape: show: {e}");
                ExitCode::from(1)
            }
            None => {
                eprintln!("{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("noop") => ExitCode::SUCCESS,
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Watches for entering processes, writes the findings to FILE, then waits to be removed
/// (the instance stays up so the harness can read FILE and measure its seccomp filter).
fn watch_exec(args: &[String]) -> ExitCode {
    let number = |name: &str| flag(args, name).and_then(|v| v.parse::<u64>().ok());
    let (Some(processes), Some(timeout), Some(expected), Some(out)) = (
        number("--processes"),
        number("--timeout"),
        flag(args, "--expect"),
        flag(args, "--out"),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let finding = window::watch(&Watch {
        processes: processes as usize,
        timeout: Duration::from_secs(timeout),
        expected_exe: expected.to_string(),
    });
    let findings = Findings {
        capsa_escape: VERSION,
        context: Context::gather(),
        probes: vec![finding],
    };
    let line = findings.to_line();
    let tmp = format!("{out}.tmp");
    if let Err(e) =
        std::fs::write(&tmp, format!("{line}\n")).and_then(|()| std::fs::rename(&tmp, out))
    {
        eprintln!("capsa-escape: {out}: {e}");
    }
    println!("{line}");
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}
