//! `capsa-probe all [--quick] [--dir DIR]` | `capsa-probe serve PORT`: see the library's doc.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: capsa-probe all [--quick] [--dir DIR] | capsa-probe serve PORT";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("all") => {
            let quick = args.iter().any(|a| a == "--quick");
            let dir = args
                .iter()
                .position(|a| a == "--dir")
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            println!(
                "{}",
                capsa_probe::local::all(capsa_probe::local::Effort::new(quick), &dir)
            );
            ExitCode::SUCCESS
        }
        Some("serve") => match args.get(1).and_then(|p| p.parse::<u16>().ok()) {
            Some(port) => match capsa_probe::tcp::serve(port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("capsa-probe: serve on port {port}: {e}");
                    ExitCode::from(1)
                }
            },
            None => {
                eprintln!("capsa-probe: serve needs a port number\n{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
