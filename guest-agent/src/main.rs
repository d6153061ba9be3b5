//! `capsa-agent`: PID 1 of capsa's VM. Sets the guest up, serves the host, powers off.

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "capsa-agent: runs as PID 1 inside capsa's VM (the engine puts it in the initramfs)"
        );
        std::process::exit(2);
    }
    if let Err(e) = capsa_agent::guest::setup() {
        eprintln!("capsa-agent: guest set-up failed: {e}");
        capsa_agent::guest::power_off();
    }
    if let Err(e) = capsa_agent::server::run() {
        eprintln!("capsa-agent: {e}");
    }
    capsa_agent::guest::power_off();
}
