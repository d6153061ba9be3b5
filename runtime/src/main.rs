//! The `capsa` command: parses flags and hands over to the library.

fn main() {
    // `capsa __vm-template-ram DIR`: the holder of a VM template's sealed RAM memfd.
    if let Some(code) = capsa::vm::ram_holder::invoked() {
        std::process::exit(code);
    }
    // Under the name `capsa-runc` (a link), capsa is an OCI runtime with runc's layout.
    if capsa::cli::runc::invoked_as_runtime() {
        std::process::exit(capsa::cli::runc::main());
    }
    std::process::exit(capsa::cli::main());
}
