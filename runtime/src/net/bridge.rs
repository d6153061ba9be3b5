//! The default bridge: `capsa0` with the gateway address of a private /16 (10.88.0.0/16,
//! Podman's; `"bip"` in the root's `daemon.json` changes it, as in Docker's), IPv4
//! forwarding, `route_localnet` for ports published on 127.0.0.1 (with the nftables guard
//! that keeps workloads off the host's loopback), IPv6 off, and the nftables tables.
//! Made on first use, under a lock, by whichever container needs it first.

use super::netlink::Netlink;
use super::{nft, nft_failed, NetError};
use std::net::Ipv4Addr;
use std::path::Path;

/// Where the bridge and its subnet are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The bridge device.
    pub name: String,
    /// The subnet's network address.
    pub subnet: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The bridge's own address.
    pub gateway: Ipv4Addr,
    /// No traffic beyond the bridge (`network create --internal`).
    pub internal: bool,
    /// `--ip-range`: the part of the subnet addresses are picked from (a fixed `--ip` may
    /// be anywhere in the subnet, as with Docker).
    pub pool: Option<(Ipv4Addr, u8)>,
    /// `--aux-address`: addresses never given to a container.
    pub reserved: Vec<Ipv4Addr>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            name: "capsa0".into(),
            subnet: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
            gateway: Ipv4Addr::new(10, 88, 0, 1),
            internal: false,
            pool: None,
            reserved: Vec::new(),
        }
    }
}

impl BridgeConfig {
    /// The default, or `"bip": "A.B.C.D/N"` of `daemon.json` (the bridge's own address).
    pub fn load(daemon_json: &Path) -> Result<BridgeConfig, NetError> {
        let text = match std::fs::read(daemon_json) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(BridgeConfig::default())
            }
            Err(e) => return Err(NetError::Invalid(format!("{}: {e}", daemon_json.display()))),
        };
        let v: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| NetError::Invalid(format!("{}: {e}", daemon_json.display())))?;
        match v.get("bip").and_then(|b| b.as_str()) {
            None => Ok(BridgeConfig::default()),
            Some(bip) => BridgeConfig::from_bip(bip).map_err(|source| NetError::Bip {
                path: daemon_json.display().to_string(),
                source,
            }),
        }
    }

    /// Parses `10.88.0.1/16`.
    pub fn from_bip(bip: &str) -> Result<BridgeConfig, super::subnet::SubnetError> {
        let (gateway, prefix) = super::subnet::parse_address_prefix(bip)?;
        Ok(BridgeConfig {
            name: "capsa0".into(),
            subnet: super::subnet::network_of(gateway, prefix),
            prefix,
            gateway,
            internal: false,
            pool: None,
            reserved: Vec::new(),
        })
    }

    /// The lowest address of the pool (the `--ip-range`, else the subnet) that is neither
    /// the subnet's network or broadcast address, the gateway, reserved, nor in `taken`.
    pub fn free_address(&self, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let (base, prefix) = self.pool.unwrap_or((self.subnet, self.prefix));
        let (base, size) = (u32::from(base), 1u32 << (32 - prefix));
        let subnet_size = 1u32 << (32 - self.prefix);
        let (network, broadcast) = (
            u32::from(self.subnet),
            u32::from(self.subnet) + subnet_size - 1,
        );
        (0..size)
            .map(|i| base + i)
            .filter(|a| *a != network && *a != broadcast)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != self.gateway && !self.reserved.contains(ip) && !taken.contains(ip))
    }
}

/// Lock serialising bridge creation between concurrent capsa processes on this machine.
const LOCK: &str = "/run/capsa-network.lock";

/// Makes sure the bridge exists, is addressed and up, hardened, and the nftables tables are
/// loaded; returns the bridge's link index.
pub fn ensure(config: &BridgeConfig, host: &mut Netlink) -> Result<u32, NetError> {
    let fail = |what: &str, reason: String| NetError::Setup {
        what: what.to_string(),
        reason,
    };
    let find = |host: &mut Netlink| {
        host.link_index(&config.name)
            .map_err(|e| fail("finding the bridge", e.to_string()))
    };
    if let Some(index) = find(host)? {
        if hardened(&config.name) {
            return Ok(index);
        }
    }
    let _lock = crate::fsutil::FileLock::acquire_outside_root(Path::new(LOCK))
        .map_err(|e| fail(LOCK, e.to_string()))?;
    if let Some(index) = find(host)? {
        // Made by an older capsa (or hardened by another process meanwhile): its rules are
        // loaded again, IPv6 disabled last, since that is what `hardened` reads.
        let what = format!("hardening bridge {}", config.name);
        nft::apply(&rules_for(config)).map_err(nft_failed(&what))?;
        disable_ipv6(&config.name).map_err(|e| fail(&what, e.to_string()))?;
        return Ok(index);
    }
    let what = format!("creating bridge {}", config.name);
    // The rules first: a bridge only ever exists with them in place.
    nft::apply(&rules_for(config)).map_err(nft_failed(&what))?;
    host.create_bridge(&config.name)
        .map_err(|e| fail(&what, e.to_string()))?;
    let index = host
        .link_index(&config.name)
        .map_err(|e| fail(&what, e.to_string()))?
        .ok_or_else(|| fail(&what, "it vanished".into()))?;
    // Before it is up: it never has an IPv6 address or takes a router advertisement.
    disable_ipv6(&config.name).map_err(|e| fail(&what, e.to_string()))?;
    host.add_address(index, config.gateway, config.prefix)
        .map_err(|e| fail(&what, e.to_string()))?;
    host.set_up(index, None)
        .map_err(|e| fail(&what, e.to_string()))?;
    for (key, value) in [
        ("net/ipv4/ip_forward".to_string(), "1"),
        (format!("net/ipv4/conf/{}/route_localnet", config.name), "1"),
    ] {
        let path = format!("/proc/sys/{key}");
        std::fs::write(&path, value).map_err(|e| fail(&path, e.to_string()))?;
    }
    Ok(index)
}

/// One nftables transaction: the tables (whole when missing, else only their guards, for
/// tables an older capsa loaded) and the bridge's elements. Repeating it changes nothing.
fn rules_for(config: &BridgeConfig) -> String {
    let tables = if nft::table_exists() {
        nft::guard()
    } else {
        nft::ruleset()
    };
    tables + &nft::add_bridge(&config.name, config.internal)
}

/// The sysctl that turns IPv6 off on `bridge`.
fn ipv6_switch(bridge: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6")
}

/// Turns IPv6 off on `bridge`. capsa's networks are IPv4 only, and a bridge with IPv6 on
/// would take a workload's forged router advertisement as the host's router and address
/// (CVE-2020-10749) and answer its IPv6 on every host service bound to `::`, around the
/// IPv4 rules. Off rather than only `accept_ra=0`: no IPv6 input path is left at all.
fn disable_ipv6(bridge: &str) -> std::io::Result<()> {
    match std::fs::write(ipv6_switch(bridge), "1") {
        // A kernel without IPv6 has nothing to turn off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `bridge` was made (or hardened) by this version: its IPv6 is off, which [`ensure`]
/// sets after the nftables guards. One file read, so every container start can check.
/// Without IPv6 in the kernel there is no such mark, and the guards are loaded again
/// (they are idempotent).
fn hardened(bridge: &str) -> bool {
    std::fs::read(ipv6_switch(bridge)).is_ok_and(|v| v.starts_with(b"1"))
}

/// Deletes the bridge and forgets it in the nftables sets (`network rm`).
pub fn remove(config: &BridgeConfig) -> Result<(), NetError> {
    let mut host = Netlink::open().map_err(|e| NetError::Setup {
        what: "netlink".into(),
        reason: e.to_string(),
    })?;
    host.delete_link(&config.name)
        .map_err(|e| NetError::Setup {
            what: format!("deleting bridge {}", config.name),
            reason: e.to_string(),
        })?;
    for command in nft::delete_bridge(&config.name) {
        let _ = nft::apply(&command);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip_gives_subnet_and_gateway() {
        let c = BridgeConfig::from_bip("172.30.5.1/24").unwrap();
        assert_eq!(c.subnet, Ipv4Addr::new(172, 30, 5, 0));
        assert_eq!(c.gateway, Ipv4Addr::new(172, 30, 5, 1));
        assert_eq!(c.free_address(&[]), Some(Ipv4Addr::new(172, 30, 5, 2)));
        assert!(BridgeConfig::from_bip("172.30.5.1").is_err());
        assert!(BridgeConfig::from_bip("172.30.5.1/31").is_err());
    }

    #[test]
    fn a_full_subnet_has_no_free_address() {
        let c = BridgeConfig::from_bip("10.0.0.1/30").unwrap();
        assert_eq!(c.free_address(&[]), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(c.free_address(&[Ipv4Addr::new(10, 0, 0, 2)]), None);
    }
}
