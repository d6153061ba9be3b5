//! The `capsa` command: parses flags and hands over to the library.

fn main() {
    // Rust ignores SIGPIPE, so a closed stdout made every print panic. A command whose
    // reader is gone ends quietly, as other command-line tools do; the processes that
    // must outlive their readers (monitors, relays) ignore it again themselves.
    capsa::linux::sys::set_broken_pipe_kills(true);
    std::process::exit(capsa::cli::main());
}
