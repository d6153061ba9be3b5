//! The `capsa` command: parses flags and hands over to the library.

fn main() {
    std::process::exit(capsa::cli::main());
}
