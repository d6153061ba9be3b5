//! `serve` (also `system service`): runs the Docker Engine API server in the foreground.

use crate::root::StateRoot;
use crate::serve::{Host, ServeOptions};
use clap::Args;

/// `serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where to listen: unix:///path (default unix:///run/capsa/capsa.sock) or, only
    /// when named, tcp://IP:PORT (plain HTTP: anyone who reaches it is root here).
    #[arg(short = 'H', long = "host", value_parser = parse_host)]
    hosts: Vec<Host>,
    /// Let members of this group use the socket (mode 0660 root:GROUP); without it the
    /// socket is 0600, root only. Group access is root access.
    #[arg(short = 'G', long)]
    group: Option<String>,
    /// The cgroup parent of containers created without one (dockerd's --cgroup-parent).
    #[arg(long = "cgroup-parent")]
    cgroup_parent: Option<String>,
    /// Podman's form (`system service URI`): the address as an argument.
    #[arg(hide = true, value_parser = parse_host)]
    uri: Option<Host>,
    /// Podman's `--time`: accepted and ignored (the server runs until stopped).
    #[arg(short = 't', long = "time", hide = true)]
    time: Option<String>,
}

fn parse_host(s: &str) -> Result<Host, String> {
    s.parse()
}

/// Serves until SIGINT/SIGTERM.
pub fn serve(root: &StateRoot, args: ServeArgs) -> i32 {
    if let Some(parent) = &args.cgroup_parent {
        if let Err(e) = crate::container::options::check_cgroup_parent(parent) {
            super::report(&e);
            return super::EXIT_FAILURE;
        }
    }
    let mut hosts = args.hosts;
    hosts.extend(args.uri);
    for host in &hosts {
        if let Host::Tcp(addr) = host {
            eprintln!(
                "capsa serve: WARNING: listening on tcp://{addr} without TLS: anyone who can \
                 reach it controls this machine as root"
            );
        }
    }
    let options = ServeOptions {
        hosts,
        group: args.group,
        cgroup_parent: args.cgroup_parent,
    };
    let result = crate::serve::serve(root.clone(), &options, |hosts| {
        for h in hosts {
            eprintln!("capsa serve: API listening on {h}");
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            super::print_error(format_args!("serve: {e}"));
            super::EXIT_FAILURE
        }
    }
}
