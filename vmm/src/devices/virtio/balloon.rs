//! virtio-balloon for free page reporting: the guest's free page blocks (the Linux driver
//! reports them in chunks of 2 MiB and up once they have been free a while) come back to the
//! host. A reported range is dropped from the VMM's mapping with `MADV_DONTNEED`: in a booted
//! VM its pages are anonymous and read as zeros afterwards; in a VM restored from a snapshot
//! they are private copies of the snapshot's `memory` and fall back to the file's page, which
//! every VM restored from it shares. The guest asked nothing of those pages' contents (they
//! are free), so either is what it may see.
//!
//! No target size is ever asked for (`num_pages` stays 0): pages the driver puts on the
//! inflate queue anyway are dropped the same way, and the deflate queue has nothing to do.

use std::io::Read;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, QueueT, Reader};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{device_type, Context, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::vstate::memory::GuestMemory;

const INFLATE: usize = 0;
const REPORTING: usize = 2;
/// inflate, deflate, then reporting: the driver numbers only the queues of the features it
/// took, and free page reporting is the only one offered.
const QUEUE_SIZES: [u16; 3] = [256, 256, 128];
pub const VIRTIO_BALLOON_F_REPORTING: u64 = 1 << 5;
/// The balloon's page size: inflate lists 4 KiB page frame numbers whatever the guest's.
const BALLOON_PAGE: u64 = 4096;
/// The largest list of page frame numbers one inflate buffer may carry.
const MAX_PFNS: usize = 1 << 16;

/// The device; it keeps no state of its own.
#[derive(Default)]
pub struct Balloon {
    /// `actual` in the config space: what the driver says it holds (only read back).
    actual: u32,
}

impl Balloon {
    pub fn new() -> Self {
        Self::default()
    }

    /// Each chain on the reporting queue lists free ranges as its (device-writable) buffers.
    fn process_reporting(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        while let Some(chain) = ctx.queues[REPORTING].pop_descriptor_chain(ctx.mem) {
            let head = chain.head_index();
            let ranges: Vec<Descriptor> = chain.collect();
            for d in ranges {
                discard(ctx.mem, d.addr(), u64::from(d.len()))?;
            }
            ctx.queues[REPORTING]
                .add_used(ctx.mem, head, 0)
                .map_err(|e| DeviceError::Guest(format!("balloon reporting used ring: {e}")))?;
        }
        ctx.notify(REPORTING);
        Ok(())
    }

    /// Inflate buffers list 32-bit page frame numbers; deflate needs nothing done.
    fn process_pages(&mut self, queue: usize, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        while let Some(chain) = ctx.queues[queue].pop_descriptor_chain(ctx.mem) {
            let head = chain.head_index();
            if queue == INFLATE {
                for pfn in read_pfns(ctx.mem, chain)? {
                    discard(
                        ctx.mem,
                        GuestAddress(u64::from(pfn) * BALLOON_PAGE),
                        BALLOON_PAGE,
                    )?;
                }
            }
            ctx.queues[queue]
                .add_used(ctx.mem, head, 0)
                .map_err(|e| DeviceError::Guest(format!("balloon used ring: {e}")))?;
        }
        ctx.notify(queue);
        Ok(())
    }
}

fn read_pfns(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> Result<Vec<u32>, DeviceError> {
    let mut reader =
        Reader::new(mem, chain).map_err(|e| DeviceError::Guest(format!("balloon list: {e}")))?;
    let len = reader.available_bytes();
    if len % 4 != 0 || len / 4 > MAX_PFNS {
        return Err(DeviceError::Guest(format!(
            "balloon page list of {len} bytes (whole 32-bit numbers, at most {MAX_PFNS})"
        )));
    }
    let mut bytes = vec![0u8; len];
    reader
        .read_exact(&mut bytes)
        .map_err(|e| DeviceError::Guest(format!("balloon list: {e}")))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Gives the host pages of `len` bytes at `addr` back. The range must be whole 4 KiB pages
/// inside one region of guest RAM: anything else is a guest breaking the protocol.
fn discard(mem: &GuestMemory, addr: GuestAddress, len: u64) -> Result<(), DeviceError> {
    let bad =
        |why: &str| DeviceError::Guest(format!("balloon range {:#x}+{len:#x}: {why}", addr.0));
    if addr.0 % BALLOON_PAGE != 0 || len % BALLOON_PAGE != 0 || len == 0 {
        return Err(bad("not whole 4 KiB pages"));
    }
    let (region, offset) = mem
        .to_region_addr(addr)
        .ok_or_else(|| bad("outside guest memory"))?;
    if offset
        .0
        .checked_add(len)
        .is_none_or(|end| end > region.len())
    {
        return Err(bad("runs past the end of its memory region"));
    }
    let host = region
        .get_host_address(offset)
        .map_err(|_| bad("outside guest memory"))?;
    // SAFETY: [host, host + len) lies inside this region's own mapping (checked above), which
    // GuestMemory keeps mapped for the VM's life. MADV_DONTNEED only drops the pages' private
    // contents (a later access gets a zero page or the mapped file's page); it does not unmap,
    // so no Rust reference into guest memory is invalidated, and the guest gave these pages up.
    let rc = unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_DONTNEED) };
    if rc != 0 {
        return Err(DeviceError::Host(std::io::Error::last_os_error()));
    }
    Ok(())
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_REPORTING
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    /// `num_pages` (always 0: no target), `actual`, then two words this device does not use.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 16];
        config[4..8].copy_from_slice(&self.actual.to_le_bytes());
        super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let (4, Ok(bytes)) = (offset, <[u8; 4]>::try_from(data)) {
            self.actual = u32::from_le_bytes(bytes);
        }
    }

    fn activate(&mut self, _features: u64, _ctx: Context<'_>) -> Result<(), DeviceError> {
        Ok(())
    }

    fn process_queue(&mut self, queue: usize, mut ctx: Context<'_>) -> Result<(), DeviceError> {
        match queue {
            REPORTING => self.process_reporting(&mut ctx),
            _ => self.process_pages(queue, &mut ctx),
        }
    }

    fn reset(&mut self, _ops: &super::EventOps) {
        self.actual = 0;
    }
}

#[cfg(test)]
mod tests;
