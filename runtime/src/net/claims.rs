//! What every state root on this host shares on one network namespace: the addresses and
//! MAC addresses on a bridge, the host ports published, the subnets of bridges. Two roots
//! (CI jobs, tenants, tests) share the default bridge `capsa0` and the nftables table, so
//! each root's own records cannot keep them apart: these claims do.
//!
//! One file per claim under [`CLAIMS_DIR`]`/<network namespace>/` (tmpfs: what it guards,
//! bridges, addresses and published ports, does not outlive a boot either), named by what
//! is claimed (`addr-capsa0-10.88.0.2`, `mac-capsa0-02:42:0a:58:00:02`,
//! `port-tcp-0.0.0.0-8080`, `subnet-10.89.1.0-24`) and holding who claims it: a state root
//! and the container (or network) there. Claims are read and written under the folder's
//! lock. Whether a claimant still holds its claim is the caller's to say (a container that
//! still exists holds its address; one that is up holds its ports): a claim it no longer
//! holds is stale and removed as it is met, so an `rm` interrupted or a state root deleted
//! never holds anything for long. The folder is per network namespace because a bridge, an
//! address and a host port exist only in one.

use super::ports::{PortMapping, Proto};
use super::NetError;
use crate::fsutil::{check_only_root_controls, FileLock};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the claims of each network namespace live.
pub const CLAIMS_DIR: &str = "/run/capsa/net";

/// One thing claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// An address on a bridge.
    Address {
        /// The bridge device.
        bridge: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// A MAC address on a bridge.
    Mac {
        /// The bridge device.
        bridge: String,
        /// The MAC address.
        mac: [u8; 6],
    },
    /// A published host port (its container port is not part of the claim: 0).
    Port(PortMapping),
    /// The subnet of a user-defined network's bridge.
    Subnet {
        /// Network address.
        net: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
}

impl Claim {
    fn file_name(&self) -> String {
        match self {
            Claim::Address { bridge, ip } => format!("addr-{bridge}-{ip}"),
            Claim::Mac { bridge, mac } => {
                let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
                format!("mac-{bridge}-{}", hex.join(":"))
            }
            Claim::Port(p) => format!("port-{}-{}-{}", p.proto.name(), p.host_ip, p.host_port),
            Claim::Subnet { net, prefix } => format!("subnet-{net}-{prefix}"),
        }
    }

    fn parse(name: &str) -> Option<Claim> {
        let (kind, rest) = name.split_once('-')?;
        match kind {
            "addr" => {
                let (bridge, ip) = rest.rsplit_once('-')?;
                Some(Claim::Address {
                    bridge: bridge.to_string(),
                    ip: ip.parse().ok()?,
                })
            }
            "mac" => {
                let (bridge, mac) = rest.rsplit_once('-')?;
                Some(Claim::Mac {
                    bridge: bridge.to_string(),
                    mac: super::parse_mac(mac).ok()?,
                })
            }
            "port" => {
                let mut parts = rest.splitn(3, '-');
                let proto = match parts.next()? {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return None,
                };
                Some(Claim::Port(PortMapping {
                    host_ip: parts.next()?.parse().ok()?,
                    host_port: parts.next()?.parse().ok()?,
                    container_port: 0,
                    proto,
                }))
            }
            "subnet" => {
                let (net, prefix) = rest.split_once('-')?;
                Some(Claim::Subnet {
                    net: net.parse().ok()?,
                    prefix: prefix.parse().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// Who claims: a container (or a network) of a state root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimant {
    /// The state root's folder.
    pub root: PathBuf,
    /// The container's full ID, or the network's name.
    pub owner: String,
}

/// The claims of this process's network namespace, locked while this value lives.
#[derive(Debug)]
pub struct Claims {
    dir: PathBuf,
    _lock: FileLock,
}

fn failed(what: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::Setup {
        what: format!("network claims {}", what.display()),
        reason: e.to_string(),
    }
}

impl Claims {
    /// Locks the claims of the network namespace this process is in.
    pub fn lock() -> Result<Claims, NetError> {
        let ns = Path::new("/proc/self/ns/net");
        let ino = std::fs::metadata(ns).map_err(|e| failed(ns, e))?.ino();
        Claims::lock_at(&Path::new(CLAIMS_DIR).join(format!("netns-{ino}")))
    }

    /// Locks the claims kept in `dir` (made root's alone if missing).
    pub fn lock_at(dir: &Path) -> Result<Claims, NetError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(dir, e))?;
        check_only_root_controls(dir).map_err(|e| failed(dir, e))?;
        let lock = dir.join(".lock");
        let lock = FileLock::acquire_outside_root(&lock).map_err(|e| failed(&lock, e))?;
        Ok(Claims {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The claims of others than `me` that their claimants still hold (`holds` says);
    /// stale claims are removed on the way. A claim that cannot be read counts as held.
    pub fn of_others(
        &self,
        me: &Claimant,
        holds: impl Fn(&Claim, &Claimant) -> bool,
    ) -> Result<Vec<(Claim, Claimant)>, NetError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| failed(&self.dir, e))?;
        let mut held = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(claim) = name.to_str().and_then(Claim::parse) else {
                continue;
            };
            let claimant = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Claimant>(&b).ok());
            match claimant {
                Some(c) if &c == me => {}
                Some(c) if !holds(&claim, &c) => {
                    tracing::debug!(claim = ?claim, root = %c.root.display(), owner = %c.owner, "stale network claim removed");
                    let _ = std::fs::remove_file(entry.path());
                }
                Some(c) => held.push((claim, c)),
                None => held.push((
                    claim,
                    Claimant {
                        root: PathBuf::new(),
                        owner: String::new(),
                    },
                )),
            }
        }
        Ok(held)
    }

    /// Records `claims` for `by`, replacing what they replace (the caller checked they
    /// are free with [`of_others`](Self::of_others) under this same lock).
    pub fn record(&self, claims: &[Claim], by: &Claimant) -> Result<(), NetError> {
        let data = serde_json::to_vec(by).map_err(|e| failed(&self.dir, e))?;
        for claim in claims {
            let path = self.dir.join(claim.file_name());
            crate::fsutil::write_private(&path, &data).map_err(|e| failed(&path, e))?;
        }
        Ok(())
    }

    /// Gives up those of `claims` that `by` holds (an address it no longer uses); a claim
    /// of another is left alone.
    pub fn release(&self, claims: &[Claim], by: &Claimant) {
        for claim in claims {
            let path = self.dir.join(claim.file_name());
            let holder = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Claimant>(&b).ok());
            if holder.as_ref() == Some(by) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// What a container's endpoint claims on `bridge`: its address, MAC and host ports.
pub fn of_endpoint(bridge: &str, endpoint: &super::Endpoint) -> Vec<Claim> {
    let mut claims = vec![
        Claim::Address {
            bridge: bridge.to_string(),
            ip: endpoint.ip,
        },
        Claim::Mac {
            bridge: bridge.to_string(),
            mac: endpoint.mac,
        },
    ];
    claims.extend(endpoint.ports.iter().map(|p| {
        Claim::Port(PortMapping {
            container_port: 0,
            ..*p
        })
    }));
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_read_back() {
        let claims = [
            Claim::Address {
                bridge: "br-0123456789ab".into(),
                ip: Ipv4Addr::new(10, 88, 0, 2),
            },
            Claim::Mac {
                bridge: "capsa0".into(),
                mac: [2, 0x42, 10, 88, 0, 2],
            },
            Claim::Port(PortMapping::parse("127.0.0.1:8080:80/udp").unwrap()),
            Claim::Subnet {
                net: Ipv4Addr::new(10, 89, 1, 0),
                prefix: 24,
            },
        ];
        for claim in claims {
            let mut back = Claim::parse(&claim.file_name()).unwrap();
            if let (Claim::Port(p), Claim::Port(q)) = (&mut back, &claim) {
                p.container_port = q.container_port;
            }
            assert_eq!(back, claim);
        }
        assert_eq!(Claim::parse(".lock"), None);
    }

    #[test]
    fn stale_claims_go_and_held_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::lock_at(&dir.path().join("ns")).unwrap();
        let a = Claimant {
            root: "/a".into(),
            owner: "one".into(),
        };
        let b = Claimant {
            root: "/b".into(),
            owner: "two".into(),
        };
        let addr = |n| Claim::Address {
            bridge: "capsa0".into(),
            ip: Ipv4Addr::new(10, 88, 0, n),
        };
        claims.record(&[addr(2)], &a).unwrap();
        claims.record(&[addr(3)], &b).unwrap();
        let seen = claims.of_others(&b, |_, _| true).unwrap();
        assert_eq!(seen, vec![(addr(2), a.clone())]);
        // `a` is gone: its claim is removed, `b`'s own stays.
        assert!(claims.of_others(&b, |_, c| c != &a).unwrap().is_empty());
        assert_eq!(
            claims.of_others(&a, |_, _| true).unwrap(),
            vec![(addr(3), b)]
        );
    }
}
