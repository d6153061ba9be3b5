//! What a VM is made of, as the command line and the library API both describe it.

use std::path::PathBuf;

pub use crate::devices::legacy::serial::SerialOutput;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub mem_bytes: u64,
    pub vcpus: u8,
    pub disks: Vec<DiskConfig>,
    pub vsock: Option<VsockConfig>,
    pub nets: Vec<NetConfig>,
    pub consoles: Vec<ConsoleConfig>,
    /// A virtio-balloon through which the guest reports free pages back to the host.
    pub free_page_reporting: bool,
    pub serial: SerialOutput,
    /// Confine each thread with its seccomp filter once set-up is done.
    pub seccomp: bool,
    /// Where to write a snapshot when the guest reaches its snapshot point (the VM then stops).
    pub snapshot_to: Option<PathBuf>,
}

/// `PATH[,ro][,id=SERIAL]` or `fd=N[,ro][,id=SERIAL]`: a file or block device (by path, or
/// a handed descriptor) as a virtio-blk disk; the guest reads the serial (at most 20 bytes)
/// in /sys/block/vdX/serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    pub id: Option<String>,
    /// A handed descriptor instead of `path`.
    pub fd: Option<std::os::fd::RawFd>,
}

impl std::str::FromStr for DiskConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(format!("disk {s:?}: expected PATH[,ro][,id=SERIAL]"));
        }
        let fd = crate::handed::parse(path)
            .transpose()
            .map_err(|e| format!("disk {s:?}: {e}"))?;
        let (mut read_only, mut id) = (false, None);
        for part in parts {
            match part.split_once('=') {
                None if part == "ro" => read_only = true,
                None if part == "rw" => read_only = false,
                Some(("id", v)) if !v.is_empty() && v.len() <= 20 => id = Some(v.to_string()),
                _ => return Err(format!("disk {s:?}: unknown part {part:?} (expected ro, rw or id=SERIAL of 1 to 20 bytes)")),
            }
        }
        Ok(Self {
            path: if fd.is_some() {
                PathBuf::new()
            } else {
                path.into()
            },
            read_only,
            id,
            fd,
        })
    }
}

/// `cid=N,uds=PATH`: the guest's vsock CID and the host Unix socket of hybrid vsock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    pub cid: u64,
    pub uds: PathBuf,
}

impl std::str::FromStr for VsockConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut cid, mut uds) = (None, None);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("cid", v)) => {
                    cid = Some(
                        v.parse::<u64>()
                            .map_err(|_| format!("vsock cid {v:?} is not a number"))?,
                    )
                }
                Some(("uds", v)) if !v.is_empty() => uds = Some(PathBuf::from(v)),
                _ => {
                    return Err(format!(
                        "vsock {s:?}: unknown part {part:?} (expected cid=N,uds=PATH)"
                    ))
                }
            }
        }
        match (cid, uds) {
            (Some(cid), Some(uds)) => Ok(Self { cid, uds }),
            _ => Err(format!("vsock {s:?}: both cid=N and uds=PATH are needed")),
        }
    }
}

/// `name=NAME,uds=PATH`: a named virtio-console port whose host side is a Unix socket it
/// listens on; or `name=NAME,fd=N`: a handed, connected stream socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub name: String,
    pub uds: PathBuf,
    /// A handed connected socket instead of `uds`.
    pub fd: Option<std::os::fd::RawFd>,
}

impl std::str::FromStr for ConsoleConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut name, mut uds, mut fd) = (None, None, None);
        for part in s.split(',') {
            if let Some(n) = crate::handed::parse(part) {
                fd = Some(n.map_err(|e| format!("console {s:?}: {e}"))?);
                continue;
            }
            match part.split_once('=') {
                Some(("name", v)) if !v.is_empty() => name = Some(v.to_string()),
                Some(("uds", v)) if !v.is_empty() => uds = Some(PathBuf::from(v)),
                _ => {
                    return Err(format!(
                        "console {s:?}: unknown part {part:?} (expected name=NAME,uds=PATH or name=NAME,fd=N)"
                    ))
                }
            }
        }
        match (name, uds, fd) {
            (Some(name), Some(uds), None) => Ok(Self { name, uds, fd }),
            (Some(name), None, Some(_)) => Ok(Self {
                name,
                uds: PathBuf::new(),
                fd,
            }),
            _ => Err(format!(
                "console {s:?}: name=NAME and one of uds=PATH or fd=N are needed"
            )),
        }
    }
}

/// `tap=NAME[,mac=aa:bb:cc:dd:ee:ff]`: a virtio-net device on a tap; or `fd=N[,mac=...]`:
/// on a handed tap descriptor (opened with IFF_VNET_HDR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub tap: String,
    pub mac: [u8; 6],
    /// A handed tap instead of `tap`.
    pub fd: Option<std::os::fd::RawFd>,
}

/// A locally administered MAC for the n-th device when none is given.
pub fn default_mac(index: usize) -> [u8; 6] {
    [0x02, 0xca, 0x95, 0x00, 0x00, index as u8 + 1]
}

impl std::str::FromStr for NetConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut tap, mut mac, mut fd) = (None, None, None);
        for part in s.split(',') {
            if let Some(n) = crate::handed::parse(part) {
                fd = Some(n.map_err(|e| format!("net {s:?}: {e}"))?);
                continue;
            }
            match part.split_once('=') {
                Some(("tap", v)) if !v.is_empty() && v.len() < 16 => tap = Some(v.to_string()),
                Some(("tap", v)) => {
                    return Err(format!("net {s:?}: tap name {v:?} must be 1 to 15 bytes"))
                }
                Some(("mac", v)) => {
                    mac = Some(
                        crate::devices::virtio::net::parse_mac(v)
                            .ok_or_else(|| format!("net {s:?}: {v:?} is not a MAC address"))?,
                    )
                }
                _ => {
                    return Err(format!(
                        "net {s:?}: unknown part {part:?} (expected tap=NAME[,mac=MAC])"
                    ))
                }
            }
        }
        let tap = match (tap, fd) {
            (Some(tap), None) => tap,
            (None, Some(n)) => format!("fd{n}"),
            _ => return Err(format!("net {s:?}: one of tap=NAME or fd=N is needed")),
        };
        Ok(Self {
            tap,
            mac: mac.unwrap_or([0; 6]),
            fd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_parse() {
        let d: DiskConfig = "/tmp/a.img,ro".parse().unwrap();
        assert!(d.read_only);
        let d: DiskConfig = "/tmp/b.img".parse().unwrap();
        assert!(!d.read_only);
        assert!("".parse::<DiskConfig>().is_err());
        let d: DiskConfig = "/tmp/l.erofs,ro,id=l0".parse().unwrap();
        assert_eq!((d.read_only, d.id.as_deref()), (true, Some("l0")));
        assert!("/tmp/x,id=".parse::<DiskConfig>().is_err());
        assert!("/tmp/x,fast".parse::<DiskConfig>().is_err());
        let v: VsockConfig = "cid=3,uds=/run/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.uds.to_str().unwrap()), (3, "/run/v.sock"));
        assert!("cid=x,uds=/a".parse::<VsockConfig>().is_err());
        assert!("cid=3".parse::<VsockConfig>().is_err());
        assert!("port=3,uds=/a".parse::<VsockConfig>().is_err());
        let n: NetConfig = "tap=tap0,mac=02:00:00:00:00:09".parse().unwrap();
        assert_eq!((n.tap.as_str(), n.mac[5]), ("tap0", 9));
        assert!("tap=".parse::<NetConfig>().is_err());
        assert!("tap=x,mac=1:2".parse::<NetConfig>().is_err());
        assert!("mac=02:00:00:00:00:09".parse::<NetConfig>().is_err());
        let c: ConsoleConfig = "name=capsa.agent,uds=/run/a.sock".parse().unwrap();
        assert_eq!(c.name, "capsa.agent");
        assert!("name=x".parse::<ConsoleConfig>().is_err());
        let c: ConsoleConfig = "name=capsa.agent,fd=5".parse().unwrap();
        assert_eq!(c.fd, Some(5));
        assert!("name=x,uds=/a,fd=5".parse::<ConsoleConfig>().is_err());
        let d: DiskConfig = "fd=4,ro,id=l0".parse().unwrap();
        assert_eq!((d.fd, d.read_only), (Some(4), true));
        assert!("fd=1".parse::<DiskConfig>().is_err());
        let n: NetConfig = "fd=6,mac=02:00:00:00:00:09".parse().unwrap();
        assert_eq!(n.fd, Some(6));
        assert!("tap=t0,fd=6".parse::<NetConfig>().is_err());
    }
}
