//! User-defined networks (`network create`): each a bridge of its own (`br-<12 hex>`, as
//! Docker names them) with its own subnet, recorded in `networks/<name>.json`. The
//! built-in `bridge`, `host` and `none` are not records; `bridge` is `capsa0`.

use super::bridge::BridgeConfig;
use super::subnet::{overlaps, parse_cidr};
use super::NetError;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The names `network create` may not take.
pub const BUILT_IN: [&str; 3] = ["bridge", "host", "none"];

/// One user-defined network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Its name.
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// Its bridge device.
    pub bridge: String,
    /// Network address of the subnet.
    pub subnet: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// The bridge's address.
    pub gateway: Ipv4Addr,
    /// No traffic beyond its bridge.
    pub internal: bool,
    /// RFC 3339.
    pub created: String,
    /// Its labels (`network create --label`, the API's `Labels`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--ip-range`: where addresses are picked from (network address, prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<(Ipv4Addr, u8)>,
    /// `--aux-address NAME=IP`: addresses never given to a container.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub aux_addresses: std::collections::BTreeMap<String, Ipv4Addr>,
}

/// What `network create` asks of its addresses (the API's `IPAM.Config`); all optional.
#[derive(Debug, Clone, Default)]
pub struct AddressPlan {
    /// `--subnet`.
    pub subnet: Option<String>,
    /// `--gateway`.
    pub gateway: Option<String>,
    /// `--ip-range`.
    pub ip_range: Option<String>,
    /// `--aux-address NAME=IP`.
    pub aux_addresses: std::collections::BTreeMap<String, String>,
}

impl NetworkRecord {
    /// Its bridge settings.
    pub fn bridge_config(&self) -> BridgeConfig {
        BridgeConfig {
            name: self.bridge.clone(),
            subnet: self.subnet,
            prefix: self.prefix,
            gateway: self.gateway,
            internal: self.internal,
            pool: self.ip_range,
            reserved: self.aux_addresses.values().copied().collect(),
        }
    }
}

/// `networks/` of a state root.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

fn invalid(msg: String) -> NetError {
    NetError::Invalid(msg)
}

impl NetworkStore {
    /// The store under `root_dir/networks`.
    pub fn new(root_dir: &Path) -> NetworkStore {
        NetworkStore {
            dir: root_dir.join("networks"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Gives network `name` the labels `labels` (replacing its record atomically).
    pub fn set_labels(
        &self,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<NetworkRecord, NetError> {
        let mut record = self.get(name)?;
        record.labels = labels;
        crate::fsutil::write_json_atomic(&self.path(&record.name), &record).map_err(|e| {
            NetError::Setup {
                what: format!("recording network {name}"),
                reason: e.to_string(),
            }
        })?;
        Ok(record)
    }

    /// Every user-defined network, by name.
    pub fn list(&self) -> Vec<NetworkRecord> {
        let mut out: Vec<NetworkRecord> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A network by name, full ID or ID prefix.
    pub fn get(&self, wanted: &str) -> Result<NetworkRecord, NetError> {
        let all = self.list();
        if let Some(n) = all.iter().find(|n| n.name == wanted) {
            return Ok(n.clone());
        }
        let by_id: Vec<_> = all
            .iter()
            .filter(|n| wanted.len() >= 3 && n.id.starts_with(wanted))
            .collect();
        match by_id.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(invalid(format!("network {wanted} not found"))),
        }
    }

    /// Creates a network; its subnet is `subnet` or the first free 10.89.N.0/24, and must
    /// not overlap `default_bridge`, another network, or the subnets in `elsewhere` (other
    /// state roots' networks on this host: subnet, prefix, what to call it).
    pub fn create(
        &self,
        name: &str,
        plan: &AddressPlan,
        internal: bool,
        default_bridge: &BridgeConfig,
        elsewhere: &[(Ipv4Addr, u8, String)],
    ) -> Result<NetworkRecord, NetError> {
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            return Err(invalid(format!(
                "invalid network name {name:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64"
            )));
        }
        if BUILT_IN.contains(&name) {
            return Err(invalid(format!(
                "{name} is a pre-defined network and cannot be created"
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| invalid(e.to_string()))?;
        let lock_path = self.dir.join(".lock");
        let _lock = crate::fsutil::FileLock::acquire(&lock_path)
            .map_err(|e| invalid(format!("{}: {e}", lock_path.display())))?;
        if self.path(name).exists() {
            return Err(invalid(format!("network with name {name} already exists")));
        }
        let existing = self.list();
        let mut taken: Vec<(Ipv4Addr, u8, String)> = existing
            .iter()
            .map(|n| (n.subnet, n.prefix, n.name.clone()))
            .collect();
        taken.push((
            default_bridge.subnet,
            default_bridge.prefix,
            "bridge".into(),
        ));
        taken.extend(elsewhere.iter().cloned());
        if plan.subnet.is_none() && (plan.ip_range.is_some() || !plan.aux_addresses.is_empty()) {
            return Err(invalid(
                "an address range or auxiliary address needs its subnet (--subnet)".into(),
            ));
        }
        let (net, prefix) = match plan.subnet.as_deref() {
            Some(s) => parse_cidr(s)?,
            None => (1..=255u8)
                .map(|n| (Ipv4Addr::new(10, 89, n, 0), 24))
                .find(|(a, p)| !taken.iter().any(|(b, q, _)| overlaps(*a, *p, *b, *q)))
                .ok_or_else(|| invalid("no free 10.89.N.0/24 subnet left".into()))?,
        };
        if let Some((_, _, other)) = taken.iter().find(|(b, q, _)| overlaps(net, prefix, *b, *q)) {
            return Err(invalid(format!(
                "invalid pool request: subnet {net}/{prefix} overlaps with network {other}"
            )));
        }
        let gateway = match plan.gateway.as_deref() {
            Some(g) => {
                let g: Ipv4Addr = g
                    .parse()
                    .map_err(|_| invalid(format!("invalid gateway {g:?}")))?;
                if !overlaps(g, prefix, net, prefix) {
                    return Err(invalid(format!(
                        "gateway {g} is not in subnet {net}/{prefix}"
                    )));
                }
                g
            }
            None => Ipv4Addr::from(u32::from(net) + 1),
        };
        let ip_range = plan
            .ip_range
            .as_deref()
            .map(|r| {
                let (r_net, r_prefix) =
                    parse_cidr(r).map_err(|e| invalid(format!("invalid ip range {r:?}: {e}")))?;
                if r_prefix < prefix || !overlaps(r_net, prefix, net, prefix) {
                    return Err(invalid(format!(
                        "ip range {r} is not within subnet {net}/{prefix}"
                    )));
                }
                Ok((r_net, r_prefix))
            })
            .transpose()?;
        let mut aux_addresses = std::collections::BTreeMap::new();
        for (key, value) in &plan.aux_addresses {
            let ip: Ipv4Addr = value.parse().map_err(|_| {
                invalid(format!(
                    "auxiliary address {key}={value:?}: not an IPv4 address"
                ))
            })?;
            if !overlaps(ip, prefix, net, prefix) || ip == gateway {
                return Err(invalid(format!(
                    "auxiliary address {key}={ip}: not a usable address of subnet {net}/{prefix}"
                )));
            }
            aux_addresses.insert(key.clone(), ip);
        }
        let id = crate::ids::new_id();
        let record = NetworkRecord {
            name: name.to_string(),
            bridge: format!("br-{}", &id[..12]),
            id,
            subnet: net,
            prefix,
            gateway,
            internal,
            created: crate::timefmt::rfc3339(std::time::SystemTime::now()),
            labels: Default::default(),
            ip_range,
            aux_addresses,
        };
        crate::fsutil::write_json_atomic(&self.path(name), &record)
            .map_err(|e| invalid(format!("{}: {e}", self.path(name).display())))?;
        Ok(record)
    }

    /// Forgets a network's record (its bridge is the caller's to delete).
    pub fn remove(&self, name: &str) -> Result<(), NetError> {
        std::fs::remove_file(self.path(name)).map_err(|e| invalid(format!("network {name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(subnet: &str) -> AddressPlan {
        AddressPlan {
            subnet: Some(subnet.into()),
            ..AddressPlan::default()
        }
    }

    #[test]
    fn subnets_are_picked_free_and_overlaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let bridge = BridgeConfig::default();
        let a = store
            .create("a", &AddressPlan::default(), false, &bridge, &[])
            .unwrap();
        assert_eq!((a.subnet, a.prefix), (Ipv4Addr::new(10, 89, 1, 0), 24));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 89, 1, 1));
        assert!(a.bridge.starts_with("br-") && a.bridge.len() == 15);
        let b = store
            .create("b", &AddressPlan::default(), true, &bridge, &[])
            .unwrap();
        assert_eq!(b.subnet, Ipv4Addr::new(10, 89, 2, 0));
        let err = store
            .create("c", &plan("10.89.1.128/25"), false, &bridge, &[])
            .unwrap_err();
        assert!(err.to_string().contains("overlaps with network a"), "{err}");
        let err = store
            .create("d", &plan("10.88.5.0/24"), false, &bridge, &[])
            .unwrap_err();
        assert!(err.to_string().contains("bridge"), "{err}");
        assert!(store
            .create("a", &AddressPlan::default(), false, &bridge, &[])
            .is_err());
        assert!(store
            .create("host", &AddressPlan::default(), false, &bridge, &[])
            .is_err());
        assert!(store
            .create("bad name", &AddressPlan::default(), false, &bridge, &[])
            .is_err());
        assert_eq!(store.get(&a.id[..8]).unwrap().name, "a");
        store.remove("a").unwrap();
        assert!(store.get("a").is_err());
    }

    #[test]
    fn a_range_and_auxiliary_addresses_shape_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let bridge = BridgeConfig::default();
        let mut wanted = plan("10.77.0.0/16");
        wanted.ip_range = Some("10.77.5.0/24".into());
        wanted.aux_addresses.insert("r".into(), "10.77.5.1".into());
        let n = store.create("n", &wanted, false, &bridge, &[]).unwrap();
        let pool = n.bridge_config();
        // 10.77.5.0 is not the subnet's network address, so it is usable; .1 is reserved.
        assert_eq!(pool.free_address(&[]), Some(Ipv4Addr::new(10, 77, 5, 0)));
        let taken = [Ipv4Addr::new(10, 77, 5, 0)];
        assert_eq!(pool.free_address(&taken), Some(Ipv4Addr::new(10, 77, 5, 2)));
        for (range, why) in [
            ("10.78.0.0/24", "not within subnet"),
            ("10.77.0.0/8", "not within"),
        ] {
            let mut bad = plan("10.66.0.0/16");
            bad.ip_range = Some(range.replace("10.77", "10.66").replace("10.78", "10.67"));
            let err = store.create("bad", &bad, false, &bridge, &[]).unwrap_err();
            assert!(err.to_string().contains(why), "{range}: {err}");
        }
        let no_subnet = AddressPlan {
            ip_range: Some("10.77.5.0/24".into()),
            ..AddressPlan::default()
        };
        assert!(store.create("x", &no_subnet, false, &bridge, &[]).is_err());
    }
}
