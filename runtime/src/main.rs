//! The `capsa` command: parses flags and hands over to the library.

fn main() {
    // Under the name `capsa-runc` (a link), capsa is an OCI runtime with runc's layout.
    if capsa::cli::runc::invoked_as_runtime() {
        std::process::exit(capsa::cli::runc::main());
    }
    std::process::exit(capsa::cli::main());
}
