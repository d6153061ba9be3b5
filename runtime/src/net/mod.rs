//! Container networking: the default bridge `capsa0`, a veth pair per container, addresses
//! from the bridge's subnet, nftables masquerade for egress and DNAT for published ports.
//!
//! The flow: [`allocate`] (at create, before the init exists) picks the address and checks
//! the host ports, under a lock, from the records of existing containers, which are the
//! pool: an address is held exactly as long as a container's record names it. [`attach`]
//! (once the init exists, in its own network namespace) makes sure the bridge and the
//! nftables table exist, creates the veth pair with its container end already inside the
//! namespace, configures it there, and publishes the ports. [`detach`] (when the workload
//! has exited, and again at `rm`) takes the ports back; the veth pair dies with the
//! namespace, which the kernel tears down asynchronously once its last process is gone.

pub mod bridge;
pub mod claims;
pub mod dns_name;
pub use capsa_core::netlink;
pub mod networks;
pub mod nft;
pub mod ports;
pub mod subnet;

use ports::PortMapping;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The network a container joins, as `--network` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own network namespace with a veth on the default bridge (Docker's default).
    #[default]
    Bridge,
    /// Its own network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    /// Parses `--network`: the mode, and for bridge networks the network's name (`bridge`
    /// for the default one; any other name is a user-defined network, checked at create).
    pub fn parse(value: &str) -> Result<(NetworkMode, String), NetworkModeError> {
        match value {
            "bridge" | "default" => Ok((NetworkMode::Bridge, "bridge".into())),
            "none" => Ok((NetworkMode::None, "none".into())),
            "host" => Ok((NetworkMode::Host, "host".into())),
            "" => Err(NetworkModeError::Empty),
            other if other.starts_with("container:") => {
                Err(NetworkModeError::ContainerMode(other.into()))
            }
            other => Ok((NetworkMode::Bridge, other.to_string())),
        }
    }

    /// The name `inspect` and `ps` show.
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// A `--network` value that names no network capsa can join.
#[derive(Debug, thiserror::Error)]
pub enum NetworkModeError {
    /// `--network ""`.
    #[error("--network needs a name")]
    Empty,
    /// `--network container:NAME`, which is absent.
    #[error("--network {0}: joining another container's network is not implemented")]
    ContainerMode(String),
}

fn default_network() -> String {
    "bridge".into()
}

fn first_interface() -> String {
    "eth0".into()
}

/// A container's place on a bridge network, recorded in its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The network's name (`bridge`, or a user-defined one).
    #[serde(default = "default_network")]
    pub network: String,
    /// Extra names on a user-defined network (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The interface inside the container: `eth0` for the first network, `eth1`... for
    /// networks connected later (its default route stays on `eth0`).
    #[serde(default = "first_interface")]
    pub ifname: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The bridge's address, its default route.
    pub gateway: Ipv4Addr,
    /// Its MAC address (derived from the IP, as Docker does).
    pub mac: [u8; 6],
    /// The host end of its veth pair.
    pub veth: String,
    /// Published ports, host ports chosen.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Whether its address was asked for (`--ip`, the API's `IPAMConfig.IPv4Address`)
    /// rather than chosen from the pool.
    #[serde(default)]
    pub ip_requested: bool,
    /// Extra link-local addresses (169.254.0.0/16) on the interface, as asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<Ipv4Addr>,
    /// Driver options as asked (the bridge uses none of them; shown by inspect).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub driver_opts: std::collections::BTreeMap<String, String>,
}

impl Endpoint {
    /// `02:42:0a:58:00:02`.
    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Errors of network set-up, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The user asked for something impossible (port taken, bad spec).
    #[error("{0}")]
    Invalid(String),
    /// The kernel or nft refused a change.
    #[error("network set-up: {what}: {reason}")]
    Setup {
        /// What was being done.
        what: String,
        /// The cause.
        reason: String,
    },
    /// A port could not be published (bad spec, host port taken).
    #[error(transparent)]
    Port(#[from] ports::PortError),
    /// A subnet that does not parse.
    #[error(transparent)]
    Subnet(#[from] subnet::SubnetError),
    /// The `bip` of daemon.json does not parse.
    #[error("{path}: bip: {source}")]
    Bip {
        /// daemon.json.
        path: String,
        /// What is wrong with it.
        #[source]
        source: subnet::SubnetError,
    },
    /// A `--network-alias` that is not a DNS name.
    #[error("--network-alias {alias:?}: invalid name: {source}")]
    Alias {
        /// The alias.
        alias: String,
        /// What is wrong with it.
        #[source]
        source: dns_name::DnsNameError,
    },
    /// nft refused a change.
    #[error("network set-up: {what}: {source}")]
    Nft {
        /// What was being done.
        what: String,
        /// nft's reason.
        #[source]
        source: nft::NftError,
    },
}

/// Maps an nft failure while doing `what`.
fn nft_failed(what: &str) -> impl Fn(nft::NftError) -> NetError + '_ {
    move |source| NetError::Nft {
        what: what.to_string(),
        source,
    }
}

fn setup(what: &str) -> impl Fn(std::io::Error) -> NetError + '_ {
    move |e| NetError::Setup {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// What a container asks of its network: `--network`, `-p`, `--ip`, `--mac-address`,
/// `--network-alias`.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The network's name.
    pub network: String,
    /// Ports to publish (host port 0: pick one).
    pub ports: Vec<PortMapping>,
    /// A fixed address.
    pub ip: Option<Ipv4Addr>,
    /// A fixed MAC address.
    pub mac: Option<[u8; 6]>,
    /// Extra names.
    pub aliases: Vec<String>,
    /// Extra link-local addresses of the interface.
    pub link_local_ips: Vec<Ipv4Addr>,
    /// Driver options as given (recorded).
    pub driver_opts: std::collections::BTreeMap<String, String>,
}

/// Picks the address (the lowest free one of the network's subnet, or the one asked for)
/// and checks (and chooses) host ports. `taken_ips` are the addresses of the network's
/// other containers, `taken_ports` the host ports of containers that are not stopped.
pub fn allocate(
    config: &bridge::BridgeConfig,
    id: &str,
    request: &Request,
    taken_ips: &[Ipv4Addr],
    taken_ports: &[PortMapping],
) -> Result<Endpoint, NetError> {
    for alias in &request.aliases {
        dns_name::check(alias).map_err(|source| NetError::Alias {
            alias: alias.clone(),
            source,
        })?;
    }
    let mut ports = Vec::with_capacity(request.ports.len());
    for p in &request.ports {
        let mut p = *p;
        let clash = taken_ports
            .iter()
            .chain(ports.iter())
            .any(|t| p.host_port != 0 && p.clashes_with(t));
        if clash {
            return Err(NetError::Invalid(format!(
                "Bind for {}:{} failed: port is already allocated",
                p.host_ip, p.host_port
            )));
        }
        p.claim_host_port()?;
        ports.push(p);
    }
    let ip = match request.ip {
        Some(ip) => {
            let mask = u32::MAX << (32 - config.prefix);
            if u32::from(ip) & mask != u32::from(config.subnet)
                || ip == config.gateway
                || ip == config.subnet
            {
                return Err(NetError::Invalid(format!(
                    "--ip {ip}: not a usable address of {}/{} (network {})",
                    config.subnet, config.prefix, request.network
                )));
            }
            if taken_ips.contains(&ip) {
                return Err(NetError::Invalid(format!(
                    "--ip {ip}: the address is already in use on network {}",
                    request.network
                )));
            }
            if config.reserved.contains(&ip) {
                return Err(NetError::Invalid(format!(
                    "--ip {ip}: the address is an auxiliary address of network {}",
                    request.network
                )));
            }
            ip
        }
        None => config.free_address(taken_ips).ok_or_else(|| {
            NetError::Invalid(format!(
                "no free address left in {}/{}",
                config.subnet, config.prefix
            ))
        })?,
    };
    let o = ip.octets();
    Ok(Endpoint {
        network: request.network.clone(),
        aliases: request.aliases.clone(),
        ifname: first_interface(),
        ip,
        prefix: config.prefix,
        gateway: config.gateway,
        mac: request.mac.unwrap_or([0x02, 0x42, o[0], o[1], o[2], o[3]]),
        veth: format!("veth{}", &id[..id.len().min(11)]),
        ports,
        ip_requested: request.ip.is_some(),
        link_local_ips: request.link_local_ips.clone(),
        driver_opts: request.driver_opts.clone(),
    })
}

/// The prefix length of 169.254.0.0/16, the only range `--link-local-ip` takes: an address
/// of a network's own subnet there would answer for another container's.
pub const LINK_LOCAL_PREFIX: u8 = 16;

/// Parses a `--link-local-ip` / `IPAMConfig.LinkLocalIPs` entry: an IPv4 address in
/// 169.254.0.0/16.
pub fn parse_link_local(value: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = value.parse().map_err(|_| {
        format!("link-local IP {value:?}: not an IPv4 address (capsa's networks are IPv4 only)")
    })?;
    if !ip.is_link_local() {
        return Err(format!("link-local IP {value}: not in 169.254.0.0/16"));
    }
    Ok(ip)
}

/// Parses `--mac-address aa:bb:cc:dd:ee:ff` (a unicast address).
pub fn parse_mac(value: &str) -> Result<[u8; 6], String> {
    let bad = || format!("--mac-address {value:?}: expected six hex bytes, aa:bb:cc:dd:ee:ff");
    let bytes: Vec<u8> = value
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let mac: [u8; 6] = bytes.try_into().map_err(|_| bad())?;
    if mac[0] & 1 == 1 {
        return Err(format!("--mac-address {value}: a multicast address"));
    }
    Ok(mac)
}

/// Brings loopback up in the network namespace of `pid` (Docker's containers have it up).
pub fn loopback_up(pid: i32) -> Result<(), NetError> {
    let mut inside = netlink::Netlink::open_in(pid).map_err(setup("entering the namespace"))?;
    let lo = inside
        .link_index("lo")
        .map_err(setup("finding lo"))?
        .ok_or_else(|| NetError::Setup {
            what: "finding lo".into(),
            reason: "no loopback device".into(),
        })?;
    inside.set_up(lo, None).map_err(setup("bringing lo up"))
}

/// Connects the init `pid` (in its own network namespace) to the bridge as `endpoint`
/// says, and publishes its ports.
pub fn attach(
    config: &bridge::BridgeConfig,
    endpoint: &Endpoint,
    pid: i32,
) -> Result<(), NetError> {
    let mut host = netlink::Netlink::open().map_err(setup("netlink"))?;
    let bridge_index = bridge::ensure(config, &mut host)?;
    // A veth of this name can only be a leftover of this very container (a crash between
    // attach and exit); the new one replaces it.
    host.delete_link(&endpoint.veth)
        .map_err(setup("removing a stale veth"))?;
    host.create_veth(&endpoint.veth, &endpoint.ifname, pid)
        .map_err(setup("creating the veth pair"))?;
    let veth = host
        .link_index(&endpoint.veth)
        .map_err(setup("finding the veth"))?
        .ok_or_else(|| NetError::Setup {
            what: "finding the veth".into(),
            reason: "it vanished".into(),
        })?;
    host.enslave_and_up(veth, bridge_index, nft::PORT_GROUP)
        .map_err(setup("attaching the veth to the bridge"))?;

    // IPv4 only, as Docker's network without IPv6: no IPv6 on the interface before it is
    // up, so no router advertisement (another workload's) ever configures it.
    let key = format!("net/ipv6/conf/{}/disable_ipv6", endpoint.ifname);
    sysctl_in(pid, &key, "1").map_err(setup("disabling IPv6"))?;
    let mut inside = netlink::Netlink::open_in(pid).map_err(setup("entering the namespace"))?;
    let first = endpoint.ifname == "eth0";
    for (name, mac) in [("lo", None), (endpoint.ifname.as_str(), Some(endpoint.mac))] {
        let index = inside
            .link_index(name)
            .map_err(setup("finding the container's links"))?
            .ok_or_else(|| NetError::Setup {
                what: format!("finding {name}"),
                reason: "missing in the container".into(),
            })?;
        if mac.is_some() {
            inside
                .add_address(index, endpoint.ip, endpoint.prefix)
                .map_err(setup("addressing the container's interface"))?;
            for ip in &endpoint.link_local_ips {
                inside
                    .add_address(index, *ip, LINK_LOCAL_PREFIX)
                    .map_err(setup("adding a link-local address"))?;
            }
        }
        inside
            .set_up(index, mac)
            .map_err(setup("bringing links up"))?;
    }
    if first {
        inside
            .add_default_route(endpoint.gateway)
            .map_err(setup("adding the default route"))?;
    }
    if !endpoint.ports.is_empty() {
        nft::apply(&nft::add_ports(&endpoint.ports, endpoint.ip))
            .map_err(nft_failed("publishing ports"))?;
    }
    Ok(())
}

/// Puts a VM's tap device (made by its engine, which holds it open) on the network's bridge,
/// up, and publishes the endpoint's ports to the VM's address. The tap goes away with the
/// engine, so nothing of it outlives the VM.
pub fn attach_tap(
    config: &bridge::BridgeConfig,
    endpoint: &Endpoint,
    wait: std::time::Duration,
) -> Result<(), NetError> {
    let mut host = netlink::Netlink::open().map_err(setup("netlink"))?;
    let bridge_index = bridge::ensure(config, &mut host)?;
    let deadline = std::time::Instant::now() + wait;
    let tap = loop {
        if let Some(i) = host
            .link_index(&endpoint.veth)
            .map_err(setup("finding the VM's tap"))?
        {
            break i;
        }
        if std::time::Instant::now() > deadline {
            return Err(NetError::Setup {
                what: format!("finding tap {}", endpoint.veth),
                reason: "the engine did not create it".into(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    host.enslave_and_up(tap, bridge_index, nft::PORT_GROUP)
        .map_err(setup("attaching the tap to the bridge"))?;
    if !endpoint.ports.is_empty() {
        nft::apply(&nft::add_ports(&endpoint.ports, endpoint.ip))
            .map_err(nft_failed("publishing ports"))?;
    }
    Ok(())
}

/// Removes interface `ifname` (and so its veth pair) from the namespace of `pid`
/// (`network disconnect`).
pub fn unplug(pid: i32, ifname: &str) -> Result<(), NetError> {
    let mut inside = netlink::Netlink::open_in(pid).map_err(setup("entering the namespace"))?;
    inside
        .delete_link(ifname)
        .map_err(setup("removing the interface"))
}

/// Writes a network sysctl of the namespace of `pid` (net sysctls belong to the namespace
/// of the thread that opens them); a key this kernel lacks is skipped.
fn sysctl_in(pid: i32, key: &str, value: &str) -> std::io::Result<()> {
    match write_sysctl_in(pid, key, value) {
        // A kernel without IPv6 has nothing to disable.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes network sysctl `key` (a path below /proc/sys) of the network namespace of `pid`.
pub fn write_sysctl_in(pid: i32, key: &str, value: &str) -> std::io::Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file descriptor we own, on this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::fs::write(&path, value)
    })
    .join()
    .map_err(|_| std::io::Error::other("sysctl thread panicked"))?
}

/// Takes a container's published ports back. Idempotent: what is already gone is skipped.
/// The veth pair is not deleted here: it goes with the container's network namespace when
/// the last process in it exits (deleting it ourselves costs an RCU grace period, 17 ms on
/// this machine, on every exit). [`attach`] replaces one a crash left behind.
/// Ports in `held_by_others` (published by containers that are up) are left alone: their
/// map elements have the same keys and now belong to those containers.
pub fn detach(endpoint: &Endpoint, held_by_others: &[PortMapping]) {
    for p in &endpoint.ports {
        if held_by_others.iter().any(|h| h.clashes_with(p)) {
            continue;
        }
        // Each element alone: one already gone must not keep the others.
        let _ = nft::apply(&nft::delete_port(p, endpoint.ip));
    }
}

/// `/etc/resolv.conf` for a container: the host's, without loopback resolvers (they would
/// be the container's own loopback); Google's public resolvers when nothing is left, as
/// Docker does.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let loopback = words
                .next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback());
            if loopback {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_dropped() {
        let conf = resolv_conf("search lan\nnameserver 127.0.0.53\nnameserver 192.168.1.1\n");
        assert_eq!(conf, "search lan\nnameserver 192.168.1.1\n");
        let conf = resolv_conf("nameserver 127.0.0.53\noptions edns0\n");
        assert!(conf.contains("nameserver 8.8.8.8"), "{conf}");
        assert!(conf.contains("options edns0"));
    }

    #[test]
    fn addresses_and_macs_follow_the_pool() {
        let config = bridge::BridgeConfig::default();
        let id = "0123456789abcdef";
        let taken = [Ipv4Addr::new(10, 88, 0, 2)];
        let e = allocate(&config, id, &Request::default(), &taken, &[]).unwrap();
        assert_eq!(e.ip, Ipv4Addr::new(10, 88, 0, 3));
        assert_eq!(e.mac_string(), "02:42:0a:58:00:03");
        assert_eq!(e.veth, "veth0123456789a");
        assert!(e.veth.len() <= 15, "IFNAMSIZ");
    }

    #[test]
    fn a_port_another_container_holds_is_refused() {
        let config = bridge::BridgeConfig::default();
        let held = PortMapping::parse("127.0.0.1:18080:80").unwrap();
        let want = PortMapping::parse("18080:81").unwrap();
        let request = Request {
            ports: vec![want],
            ..Request::default()
        };
        let err = allocate(&config, "ab", &request, &[], &[held]).unwrap_err();
        assert!(err.to_string().contains("already allocated"), "{err}");
    }

    #[test]
    fn fixed_addresses_must_be_free_and_in_the_subnet() {
        let config = bridge::BridgeConfig::default();
        let mut request = Request {
            ip: Some(Ipv4Addr::new(10, 88, 3, 7)),
            mac: Some(parse_mac("02:00:00:00:00:07").unwrap()),
            ..Request::default()
        };
        let e = allocate(&config, "ab", &request, &[], &[]).unwrap();
        assert_eq!(e.ip, Ipv4Addr::new(10, 88, 3, 7));
        assert_eq!(e.mac_string(), "02:00:00:00:00:07");
        assert!(allocate(&config, "ab", &request, &[e.ip], &[]).is_err());
        request.ip = Some(Ipv4Addr::new(192, 168, 1, 1));
        assert!(allocate(&config, "ab", &request, &[], &[]).is_err());
        assert!(parse_mac("01:00:00:00:00:01").is_err());
        assert!(parse_mac("zz").is_err());
    }
}
