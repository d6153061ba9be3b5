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
    pub serial: SerialOutput,
    /// Confine each thread with its seccomp filter once set-up is done.
    pub seccomp: bool,
}

/// `PATH[,ro]`: a file or block device as a virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

impl std::str::FromStr for DiskConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, read_only) = match s.strip_suffix(",ro") {
            Some(p) => (p, true),
            None => (s.strip_suffix(",rw").unwrap_or(s), false),
        };
        if path.is_empty() {
            return Err(format!("disk {s:?}: expected PATH[,ro]"));
        }
        Ok(Self {
            path: path.into(),
            read_only,
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
        let v: VsockConfig = "cid=3,uds=/run/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.uds.to_str().unwrap()), (3, "/run/v.sock"));
        assert!("cid=x,uds=/a".parse::<VsockConfig>().is_err());
        assert!("cid=3".parse::<VsockConfig>().is_err());
        assert!("port=3,uds=/a".parse::<VsockConfig>().is_err());
    }
}
