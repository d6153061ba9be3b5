//! virtio-blk over a file or block device: read, write, flush and get-id requests, read-only
//! or read-write. Requests run synchronously on the event loop (the disks here are page-cached
//! files; an I/O thread is the next step if a workload needs parallel requests).

mod request;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use virtio_queue::QueueT;

use super::{
    device_type, Context, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};
pub use request::SECTOR_SIZE;

const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const QUEUE_SIZE: u16 = 256;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open disk {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk {path} is {size} bytes, not a whole number of 512-byte sectors")]
    NotSectorAligned { path: PathBuf, size: u64 },
}

pub struct Block {
    file: File,
    read_only: bool,
    sectors: u64,
    id: [u8; 20],
    config: [u8; 8],
}

impl Block {
    /// Opens `path` (a regular file or a block device) as the disk.
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open {
            path: path.into(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        Self::from_file(file, path, read_only, id)
    }

    /// The disk on `file` (opened by whoever handed it; `label` names it in errors).
    pub fn from_file(
        mut file: File,
        label: &Path,
        read_only: bool,
        id: &str,
    ) -> Result<Self, BlockError> {
        let path = label;
        let open_err = |source| BlockError::Open {
            path: path.into(),
            source,
        };
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        if size % SECTOR_SIZE != 0 {
            return Err(BlockError::NotSectorAligned {
                path: path.into(),
                size,
            });
        }
        let sectors = size / SECTOR_SIZE;
        let mut ids = [0u8; 20];
        let n = id.len().min(20);
        ids[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Self {
            file,
            read_only,
            sectors,
            id: ids,
            config: sectors.to_le_bytes(),
        })
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_BLK_F_FLUSH
            | ro
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, _features: u64, _ctx: Context<'_>) -> Result<(), DeviceError> {
        Ok(())
    }

    fn process_queue(&mut self, queue: usize, mut ctx: Context<'_>) -> Result<(), DeviceError> {
        let disk = request::Disk {
            file: &self.file,
            sectors: self.sectors,
            read_only: self.read_only,
            id: &self.id,
        };
        loop {
            let q = &mut ctx.queues[queue];
            // With EVENT_IDX, re-check after enabling notifications so no request is missed.
            while let Some(chain) = q.pop_descriptor_chain(ctx.mem) {
                let head = chain.head_index();
                let written = request::execute(&disk, ctx.mem, chain);
                q.add_used(ctx.mem, head, written)
                    .map_err(|e| DeviceError::Guest(format!("used ring: {e}")))?;
            }
            if !q
                .enable_notification(ctx.mem)
                .map_err(|e| DeviceError::Guest(e.to_string()))?
            {
                break;
            }
        }
        ctx.notify(queue);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
