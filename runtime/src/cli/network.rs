//! `network create|ls|inspect|rm|prune`.

use super::{print_table, EXIT_FAILURE};
use crate::container::{ContainerError, ContainerStore};
use crate::net::networks::{NetworkStore, BUILT_IN};
use crate::net::NetError;
use crate::root::StateRoot;
use crate::template::format::{Format, Rows};
use crate::template::Shape;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// `network` verbs.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a bridge network with its own subnet.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks as JSON.
    Inspect(InspectArgs),
    /// Remove networks no container uses.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove every network no container uses.
    Prune(PruneArgs),
    /// Connect a container to one more network (eth1, eth2...).
    Connect(ConnectArgs),
    /// Disconnect a container from a network it was connected to.
    Disconnect(DisconnectArgs),
}

/// `network connect` flags.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// An IPv4 address on the network.
    #[arg(long)]
    ip: Option<String>,
    /// Another name for the container on this network.
    #[arg(long)]
    alias: Vec<String>,
    /// The network.
    network: String,
    /// The container.
    container: String,
}

/// `network disconnect` arguments.
#[derive(Args, Debug)]
pub struct DisconnectArgs {
    /// Accepted for Docker's sake.
    #[arg(short = 'f', long)]
    force: bool,
    /// The network.
    network: String,
    /// The container.
    container: String,
}

/// `network create` flags.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The subnet, A.B.C.D/N (default: the next free 10.89.N.0/24).
    #[arg(long)]
    subnet: Option<String>,
    /// The bridge's address (default: the subnet's first).
    #[arg(long)]
    gateway: Option<String>,
    /// Allocate container addresses from this part of the subnet, A.B.C.D/N.
    #[arg(long = "ip-range")]
    ip_range: Option<String>,
    /// An address no container gets, NAME=A.B.C.D (repeatable).
    #[arg(long = "aux-address")]
    aux_address: Vec<String>,
    /// No traffic beyond the network's bridge.
    #[arg(long)]
    internal: bool,
    /// Only "bridge" is available.
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// The network's name.
    name: String,
}

/// `network ls` flags.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only show IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Format with a Go template ({{.ID}} {{.Name}} {{.Driver}} ...), `table TEMPLATE`,
    /// or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// Docker's `network ls` rows: its formatter context and the title of each field.
const NETWORK_ROWS: Rows = Rows {
    shape: Shape {
        type_name: Some("*network.networkContext"),
        string_maps: &[],
        maps: &[],
    },
    titles: &[
        ("ID", "NETWORK ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("IPv6", "IPV6"),
        ("Internal", "INTERNAL"),
        ("Labels", "LABELS"),
        ("CreatedAt", "CREATED AT"),
    ],
};

/// `network inspect` flags.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output with a Go template.
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Networks.
    #[arg(required = true)]
    networks: Vec<String>,
}

/// `network rm` arguments.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Networks.
    #[arg(required = true)]
    networks: Vec<String>,
}

/// `network prune` flags.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask (capsa never asks).
    #[arg(short = 'f', long)]
    force: bool,
}

/// Runs a `network` verb.
pub fn network(root: &StateRoot, command: NetworkCommand) -> i32 {
    let store = NetworkStore::new(root.dir());
    let containers = ContainerStore::new(root);
    match command {
        NetworkCommand::Create(a) => create(root, a),
        NetworkCommand::Ls(a) => ls(&store, a),
        NetworkCommand::Inspect(a) => inspect(root, &containers, a),
        NetworkCommand::Rm(a) => {
            let mut rc = 0;
            for name in &a.networks {
                match crate::container::network::remove_network(&containers, name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        super::print_error(format_args!("{e}"));
                        rc = EXIT_FAILURE;
                    }
                }
            }
            rc
        }
        NetworkCommand::Connect(a) => {
            let result = parse_ip(a.ip.as_deref()).and_then(|ip| {
                // The default bridge has no record of its own.
                let name = match a.network.as_str() {
                    "bridge" => a.network.clone(),
                    other => store.get(other)?.name,
                };
                let id = containers.resolve(&a.container)?;
                crate::container::network::connect_network(
                    &containers,
                    &id,
                    &name,
                    ip,
                    None,
                    a.alias,
                )
                .map_err(CmdError::from)
            });
            done(result)
        }
        NetworkCommand::Disconnect(a) => {
            let result = containers
                .resolve(&a.container)
                .and_then(|id| {
                    crate::container::network::disconnect_network(&containers, &id, &a.network)
                })
                .map_err(CmdError::from);
            done(result)
        }
        NetworkCommand::Prune(_) => {
            let gone = prune_unused(root);
            if !gone.is_empty() {
                println!("Deleted Networks:\n{}", gone.join("\n"));
            }
            0
        }
    }
}

/// Why a `network` subcommand failed.
#[derive(Debug, thiserror::Error)]
enum CmdError {
    /// Holds the address as given.
    #[error("--ip {0:?}: not an IPv4 address")]
    BadIp(String, #[source] std::net::AddrParseError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Container(#[from] ContainerError),
}

fn parse_ip(ip: Option<&str>) -> Result<Option<std::net::Ipv4Addr>, CmdError> {
    ip.map(|ip| ip.parse().map_err(|e| CmdError::BadIp(ip.to_string(), e)))
        .transpose()
}

fn done(result: Result<(), CmdError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            super::print_error(format_args!("{e}"));
            EXIT_FAILURE
        }
    }
}

fn create(root: &StateRoot, a: CreateArgs) -> i32 {
    if a.driver != "bridge" {
        super::print_error(format_args!(
            "network driver {:?} is not available (only bridge)",
            a.driver
        ));
        return EXIT_FAILURE;
    }
    let mut aux_addresses = std::collections::BTreeMap::new();
    for entry in &a.aux_address {
        let Some((key, ip)) = entry.split_once('=') else {
            super::print_error(format_args!("--aux-address {entry:?}: expected NAME=IP"));
            return EXIT_FAILURE;
        };
        aux_addresses.insert(key.to_string(), ip.to_string());
    }
    let plan = crate::net::networks::AddressPlan {
        subnet: a.subnet,
        gateway: a.gateway,
        ip_range: a.ip_range,
        aux_addresses,
    };
    let made = crate::container::network::create_network(root, &a.name, &plan, a.internal);
    match made {
        Ok(n) => {
            println!("{}", n.id);
            0
        }
        Err(e) => {
            super::print_error(format_args!("{e}"));
            EXIT_FAILURE
        }
    }
}

fn ls(store: &NetworkStore, a: LsArgs) -> i32 {
    let format = match Format::parse(a.format.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            super::report(&e);
            return EXIT_FAILURE;
        }
    };
    // capsa's networks have no labels and no IPv6.
    let row = |id: &str, name: &str, driver: &str, internal: bool, created: &str| {
        json!({
            "ID": id[..12].to_string(),
            "Name": name,
            "Driver": driver,
            "Scope": "local",
            "IPv6": "false",
            "Internal": internal.to_string(),
            "Labels": "",
            "CreatedAt": created,
        })
    };
    let mut rows: Vec<Value> = BUILT_IN
        .iter()
        .map(|n| {
            let driver = match *n {
                "none" => "null",
                other => other,
            };
            row(
                &crate::container::network::builtin_id(n),
                n,
                driver,
                false,
                "",
            )
        })
        .collect();
    rows.extend(
        store
            .list()
            .into_iter()
            .map(|n| row(&n.id, &n.name, "bridge", n.internal, &n.created)),
    );
    rows.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
    if a.quiet {
        for r in rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return 0;
    }
    match format.render(&rows, &NETWORK_ROWS) {
        Ok(Some(text)) => print!("{text}"),
        Ok(None) => {
            let cols = ["ID", "Name", "Driver", "Scope"];
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    cols.iter()
                        .map(|c| r[c].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .collect();
            print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &cells);
        }
        Err(e) => {
            super::report(&e);
            return EXIT_FAILURE;
        }
    }
    0
}

fn inspect(root: &StateRoot, containers: &ContainerStore, a: InspectArgs) -> i32 {
    let mut values = Vec::new();
    let mut rc = 0;
    for n in &a.networks {
        match crate::container::network::describe(root, containers, n) {
            Ok(v) => values.push(v),
            Err(e) => {
                super::print_error(format_args!("{e}"));
                rc = EXIT_FAILURE;
            }
        }
    }
    if super::containers::print_inspected(&values, a.format.as_deref()) != 0 {
        return EXIT_FAILURE;
    }
    rc
}

/// Removes a user-defined network that no container record names: its bridge, its
/// nftables set elements, its record.
/// Removes every network no container uses (`network prune`, `system prune`); returns
/// their names.
pub(super) fn prune_unused(root: &StateRoot) -> Vec<String> {
    crate::container::network::prune_networks(&ContainerStore::new(root))
}
