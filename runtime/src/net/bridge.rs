//! The default bridge: `capsa0` with the gateway address of a private /16 (10.88.0.0/16,
//! Podman's; `"bip"` in the root's `daemon.json` changes it, as in Docker's), IPv4
//! forwarding, `route_localnet` for ports published on 127.0.0.1, and the nftables table.
//! Made on first use, under a lock, by whichever container needs it first.

use super::netlink::Netlink;
use super::{nft, NetError};
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
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            name: "capsa0".into(),
            subnet: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
            gateway: Ipv4Addr::new(10, 88, 0, 1),
            internal: false,
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
            Some(bip) => BridgeConfig::from_bip(bip)
                .map_err(|e| NetError::Invalid(format!("{}: bip: {e}", daemon_json.display()))),
        }
    }

    /// Parses `10.88.0.1/16`.
    pub fn from_bip(bip: &str) -> Result<BridgeConfig, String> {
        let (gateway, prefix) = super::networks::parse_address_prefix(bip)?;
        Ok(BridgeConfig {
            name: "capsa0".into(),
            subnet: super::networks::network_of(gateway, prefix),
            prefix,
            gateway,
            internal: false,
        })
    }

    /// The lowest address of the subnet that is neither the network, the gateway, the
    /// broadcast address nor in `taken`.
    pub fn free_address(&self, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let base = u32::from(self.subnet);
        let size = 1u32 << (32 - self.prefix);
        (1..size - 1)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| *ip != self.gateway && !taken.contains(ip))
    }
}

/// Lock serialising bridge creation between concurrent capsa processes on this machine.
const LOCK: &str = "/run/capsa-network.lock";

/// Makes sure the bridge exists, is addressed and up, and the nftables table is loaded;
/// returns the bridge's link index.
pub fn ensure(config: &BridgeConfig, host: &mut Netlink) -> Result<u32, NetError> {
    let fail = |what: &str, reason: String| NetError::Setup {
        what: what.to_string(),
        reason,
    };
    if let Some(index) = host
        .link_index(&config.name)
        .map_err(|e| fail("finding the bridge", e.to_string()))?
    {
        return Ok(index);
    }
    let _lock = crate::fsutil::FileLock::acquire_outside_root(Path::new(LOCK))
        .map_err(|e| fail(LOCK, e.to_string()))?;
    if let Some(index) = host
        .link_index(&config.name)
        .map_err(|e| fail("finding the bridge", e.to_string()))?
    {
        return Ok(index);
    }
    let what = format!("creating bridge {}", config.name);
    // The table first: a bridge only ever exists with its rules in place.
    if !nft::table_exists() {
        nft::apply(&nft::ruleset()).map_err(|e| fail(&what, e))?;
    }
    host.create_bridge(&config.name)
        .map_err(|e| fail(&what, e.to_string()))?;
    let index = host
        .link_index(&config.name)
        .map_err(|e| fail(&what, e.to_string()))?
        .ok_or_else(|| fail(&what, "it vanished".into()))?;
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
    nft::apply(&nft::add_bridge(&config.name, config.internal)).map_err(|e| fail(&what, e))?;
    Ok(index)
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
