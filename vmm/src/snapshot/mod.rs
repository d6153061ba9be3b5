//! A Firecracker-style snapshot of a stopped VM in a directory: `state` (versioned and
//! checksummed: vCPUs, the in-kernel irqchip, PIT and clock, the legacy devices) and `memory`
//! (guest RAM, its regions back to back). A restore maps `memory` privately, so any number of
//! restored VMs share its unwritten pages and none of them ever writes the file.
//!
//! `state` is one header line, `capsa-vmm-snapshot <format> sha256=<hex of the body>`, then
//! the JSON body; a foreign format, a truncated or altered body, or a memory file of the wrong
//! size is refused before anything runs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap};

use crate::devices::virtio::mmio::TransportState;
use crate::vstate::memory::{self, GuestMemory};

mod machine;
use crate::vstate::saved::{VcpuState, VmState};
pub(crate) use machine::take;
pub use machine::RestoreConfig;

/// The layout of `state` this capsa-vmm writes and reads; any change to [`SnapshotState`]
/// bumps it.
pub const FORMAT: u32 = 2;
const MAGIC: &str = "capsa-vmm-snapshot";
pub const STATE_FILE: &str = "state";
pub const MEMORY_FILE: &str = "memory";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot {0}: not a capsa-vmm snapshot state file")]
    NotASnapshot(PathBuf),
    #[error("snapshot {path}: format {found}, this capsa-vmm reads format {FORMAT} only")]
    Format { path: PathBuf, found: String },
    #[error("snapshot {0}: checksum mismatch (the state file is truncated or corrupt)")]
    Checksum(PathBuf),
    #[error("snapshot {path}: unreadable state: {detail}")]
    Body { path: PathBuf, detail: String },
    #[error("snapshot {path}: {found} bytes, the snapshot's guest has {wanted}")]
    MemorySize {
        path: PathBuf,
        found: u64,
        wanted: u64,
    },
    #[error("snapshot {path}: cannot map guest memory privately: {detail}")]
    Map { path: PathBuf, detail: String },
    #[error("snapshot {path}: {source}")]
    Size {
        path: PathBuf,
        source: memory::MemoryError,
    },
    #[error("snapshot {path}: {detail}")]
    Devices { path: PathBuf, detail: String },
    #[error("snapshot {0}: holds a snapshot already (remove it or choose another directory)")]
    Exists(PathBuf),
}

/// COM1's registers (vm-superio's `SerialState`, which has no serde of its own).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl From<vm_superio::serial::SerialState> for SerialState {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialState> for vm_superio::serial::SerialState {
    fn from(s: &SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// Everything but guest memory. The i8042 (reset only) and the boot timer keep no state;
/// virtio devices are their transports with what each device keeps of its own, in the VM's
/// device order (disks, nets, the console, vsock, the balloon).
#[derive(Serialize, Deserialize)]
pub struct SnapshotState {
    /// The capsa-vmm that wrote it, for people reading the file.
    pub written_by: String,
    pub mem_bytes: u64,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub serial: SerialState,
    pub devices: Vec<TransportState>,
}

/// The two files of a snapshot being taken, opened (and truncated) before the VM runs: the
/// VMM thread's seccomp filter allows no open, only writes to these.
pub struct SnapshotFiles {
    dir: PathBuf,
    state: File,
    memory: File,
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SnapshotFiles {
    /// Creates `dir` if needed and opens its `state` and `memory` for writing. A directory
    /// that holds a snapshot already (a non-empty `state`) is refused: VMs restored from it
    /// may be running on its memory file, which must never change under them.
    pub fn create(dir: &Path) -> Result<Self, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let open = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|source| SnapshotError::Io { path, source })
        };
        let state = open(STATE_FILE)?;
        let state_path = dir.join(STATE_FILE);
        if state.metadata().map_err(io_at(&state_path))?.len() > 0 {
            return Err(SnapshotError::Exists(dir.to_path_buf()));
        }
        let memory = open(MEMORY_FILE)?;
        let memory_path = dir.join(MEMORY_FILE);
        memory.set_len(0).map_err(io_at(&memory_path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            state,
            memory,
        })
    }

    /// Writes guest memory, then the state: a state file that reads back whole means the
    /// memory beside it was written whole too. The vCPUs and devices are stopped.
    pub fn write(mut self, state: &SnapshotState, mem: &GuestMemory) -> Result<(), SnapshotError> {
        let memory_path = self.dir.join(MEMORY_FILE);
        // The vCPUs have left KVM_RUN and the device thread has stopped: nothing writes guest
        // memory while it is copied out.
        for region in mem.iter() {
            mem.write_all_volatile_to(region.start_addr(), &mut self.memory, region.len() as usize)
                .map_err(|e| SnapshotError::Io {
                    path: memory_path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
        }
        self.memory.sync_all().map_err(io_at(&memory_path))?;
        let state_path = self.dir.join(STATE_FILE);
        let body = serde_json::to_vec(state).map_err(|e| SnapshotError::Body {
            path: state_path.clone(),
            detail: e.to_string(),
        })?;
        let header = format!(
            "{MAGIC} {FORMAT} sha256={}\n",
            hex::encode(Sha256::digest(&body))
        );
        self.state
            .write_all(header.as_bytes())
            .and_then(|()| self.state.write_all(&body))
            .and_then(|()| self.state.sync_all())
            .map_err(io_at(&state_path))
    }
}

/// Reads and checks `dir/state`: the magic, the format, the checksum, then the body.
pub fn read_state(dir: &Path) -> Result<SnapshotState, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_at(&path))?;
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .filter(|&n| n <= 128)
        .ok_or_else(|| SnapshotError::NotASnapshot(path.clone()))?;
    let header = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| SnapshotError::NotASnapshot(path.clone()))?;
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(SnapshotError::NotASnapshot(path));
    }
    let format = words.next().unwrap_or_default();
    if format != FORMAT.to_string() {
        return Err(SnapshotError::Format {
            path,
            found: format.to_string(),
        });
    }
    let body = &bytes[newline + 1..];
    let sum = words.next().and_then(|w| w.strip_prefix("sha256="));
    if sum != Some(hex::encode(Sha256::digest(body)).as_str()) {
        return Err(SnapshotError::Checksum(path));
    }
    serde_json::from_slice(body).map_err(|e| SnapshotError::Body {
        path,
        detail: e.to_string(),
    })
}

/// Maps `dir/memory` copy-on-write as the guest's RAM: opened read-only, so no restored VM
/// can write the file; the pages a guest writes become its own.
pub fn map_memory(dir: &Path, mem_bytes: u64) -> Result<GuestMemory, SnapshotError> {
    let path = dir.join(MEMORY_FILE);
    memory::check_size(mem_bytes).map_err(|source| SnapshotError::Size {
        path: path.clone(),
        source,
    })?;
    let file = File::open(&path).map_err(io_at(&path))?;
    let found = file.metadata().map_err(io_at(&path))?.len();
    if found != mem_bytes {
        return Err(SnapshotError::MemorySize {
            path,
            found,
            wanted: mem_bytes,
        });
    }
    let map_err = |detail: String| SnapshotError::Map {
        path: path.clone(),
        detail,
    };
    let file = std::sync::Arc::new(file);
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for (start, len) in memory::ram_ranges(mem_bytes) {
        let mapping = MmapRegionBuilder::<()>::new(len)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| map_err(e.to_string()))?;
        regions.push(
            GuestRegionMmap::new(mapping, start)
                .ok_or_else(|| map_err("region wraps the address space".into()))?,
        );
        offset += len as u64;
    }
    GuestMemory::from_regions(regions).map_err(|e| map_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_file(bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), bytes).unwrap();
        dir
    }

    #[test]
    fn a_file_that_is_not_a_snapshot_is_refused() {
        for bytes in [&b""[..], b"{\"mem_bytes\":1}\n", b"capsa-vmm-snapshot"] {
            let dir = state_file(bytes);
            assert!(
                matches!(read_state(dir.path()), Err(SnapshotError::NotASnapshot(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn another_format_is_refused_before_its_body_is_read() {
        let dir = state_file(b"capsa-vmm-snapshot 0 sha256=00\n{}");
        let err = read_state(dir.path()).err().unwrap();
        assert!(matches!(&err, SnapshotError::Format { found, .. } if found == "0"));
        assert!(
            err.to_string()
                .contains(&format!("reads format {FORMAT} only")),
            "{err}"
        );
    }

    #[test]
    fn a_body_that_does_not_match_its_checksum_is_refused() {
        let body = b"{\"written_by\":\"x\"}";
        let sum = hex::encode(Sha256::digest(body));
        let dir = state_file(format!("capsa-vmm-snapshot {FORMAT} sha256={sum}\n{{}}").as_bytes());
        assert!(matches!(
            read_state(dir.path()),
            Err(SnapshotError::Checksum(_))
        ));
        // The right checksum over a body that is not a whole state: refused, not run.
        let dir = state_file(
            format!("capsa-vmm-snapshot {FORMAT} sha256={sum}\n{}", text(body)).as_bytes(),
        );
        assert!(matches!(
            read_state(dir.path()),
            Err(SnapshotError::Body { .. })
        ));
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn a_memory_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MEMORY_FILE), vec![0u8; 4096]).unwrap();
        assert!(matches!(
            map_memory(dir.path(), 16 << 20),
            Err(SnapshotError::MemorySize { found: 4096, .. })
        ));
    }
}
