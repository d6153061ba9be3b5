//! Guest RAM: anonymous private mappings, split around the MMIO gap below 4 GiB.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// The guest's memory as the devices and the loader see it.
pub type GuestMemory = GuestMemoryMmap<()>;

const PAGE: u64 = 4096;
/// The smallest guest we boot: the low 1 MiB plus room for a kernel.
pub const MIN_MEM: u64 = 16 << 20;
/// The largest guest: what KVM's memory slots and a 64-bit host comfortably hold.
pub const MAX_MEM: u64 = 256 << 30;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory size {0} bytes is not a multiple of the 4 KiB page")]
    NotPageAligned(u64),
    #[error("guest memory size {size} bytes is outside {min}..={max}")]
    OutOfRange { size: u64, min: u64, max: u64 },
    #[error("cannot map {size} bytes of guest memory: {source}")]
    Map {
        size: u64,
        source: vm_memory::mmap::FromRangesError,
    },
}

/// The RAM ranges of a guest of `size` bytes: everything below the MMIO gap, the rest above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Checks a requested size and maps the guest's RAM.
pub fn create(size: u64) -> Result<GuestMemory, MemoryError> {
    check_size(size)?;
    GuestMemory::from_ranges(&ram_ranges(size)).map_err(|source| MemoryError::Map { size, source })
}

/// A guest size capsa-vmm runs: whole pages, from [`MIN_MEM`] to [`MAX_MEM`].
pub fn check_size(size: u64) -> Result<(), MemoryError> {
    if size % PAGE != 0 {
        return Err(MemoryError::NotPageAligned(size));
    }
    if !(MIN_MEM..=MAX_MEM).contains(&size) {
        return Err(MemoryError::OutOfRange {
            size,
            min: MIN_MEM,
            max: MAX_MEM,
        });
    }
    Ok(())
}

/// The host address range of every region, so that memory accounting can tell the guest's
/// mappings from the VMM's own.
pub fn host_ranges(mem: &GuestMemory) -> Vec<(u64, u64)> {
    mem.iter().map(|r| (r.as_ptr() as u64, r.len())).collect()
}

/// Parses sizes as `--mem` takes them: bytes, or with a K, M or G suffix (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => {
                    return Err(format!(
                        "memory size {text:?}: unknown unit {c:?} (use K, M or G)"
                    ))
                }
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("memory size {text:?} is not a number"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("memory size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("128M").unwrap(), 128 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999G").is_err());
    }

    #[test]
    fn bad_sizes_are_refused_before_mapping() {
        assert!(matches!(
            create((128 << 20) + 1),
            Err(MemoryError::NotPageAligned(_))
        ));
        assert!(matches!(create(4096), Err(MemoryError::OutOfRange { .. })));
        assert!(matches!(
            create(MAX_MEM + PAGE),
            Err(MemoryError::OutOfRange { .. })
        ));
    }

    #[test]
    fn large_guests_skip_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1 as u64, MMIO_GAP_START);
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(r[1].1 as u64, (4 << 30) - MMIO_GAP_START);
    }
}
