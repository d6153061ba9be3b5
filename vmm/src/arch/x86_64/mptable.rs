//! The Intel MultiProcessor table: how a guest without ACPI learns its CPUs, its IOAPIC and which
//! ISA interrupt goes to which IOAPIC pin. Written at the start of the EBDA, where Linux looks.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{EBDA, IOAPIC, LAPIC, LAST_IRQ};
use crate::vstate::memory::GuestMemory;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOT: u8 = 2;
/// CPU signature and feature flags of a family 6 part with an FPU and APIC, as Firecracker's.
const CPU_SIGNATURE: u32 = (6 << 8) | (1 << 4) | 1;
const CPU_FEATURES: u32 = (1 << 9) | 1;
/// The most vCPUs whose table still fits in the 1 KiB between the EBDA and 0xa0000.
pub const MAX_VCPUS: u8 = 32;

#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("{0} vCPUs do not fit in an MP table (at most {MAX_VCPUS})")]
    TooManyCpus(u8),
    #[error("cannot write the MP table into guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Builds the table for `cpus` vCPUs and writes it at the EBDA.
pub fn write(mem: &GuestMemory, cpus: u8) -> Result<(), MpTableError> {
    if cpus == 0 || cpus > MAX_VCPUS {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    let table = build(cpus, (EBDA + 16) as u32);
    mem.write_slice(&table, GuestAddress(EBDA))?;
    Ok(())
}

/// The floating pointer structure followed by the configuration table it points at.
fn build(cpus: u8, config_addr: u32) -> Vec<u8> {
    let ioapic_id = cpus + 1;
    let mut entries = Vec::new();
    let mut count = 0u16;
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOT } else { 0 };
        entries.extend([0, cpu, APIC_VERSION, flags]);
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    entries.extend([1, 0]); // bus 0
    entries.extend(*b"ISA   ");
    entries.extend([2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend((IOAPIC as u32).to_le_bytes());
    count += 2;
    for irq in 0..=LAST_IRQ as u8 {
        // I/O interrupt: type INT, default polarity/trigger, bus 0 IRQ n -> IOAPIC pin n.
        entries.extend([3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupts: ExtINT to every LAPIC's LINT0, NMI to LINT1.
    entries.extend([4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend([4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut config = Vec::with_capacity(44 + entries.len());
    config.extend(*b"PCMP");
    config.extend(((44 + entries.len()) as u16).to_le_bytes());
    config.extend([4, 0]); // spec 1.4, checksum below
    config.extend(*b"CAPSA   ");
    config.extend(*b"MICROVM     ");
    config.extend([0u8; 4]); // OEM table pointer
    config.extend([0u8; 2]); // OEM table size
    config.extend(count.to_le_bytes());
    config.extend((LAPIC as u32).to_le_bytes());
    config.extend([0u8; 4]); // extended table length, checksum, reserved
    config.extend(entries);
    config[7] = checksum(&config);

    let mut floating = Vec::with_capacity(16 + config.len());
    floating.extend(*b"_MP_");
    floating.extend(config_addr.to_le_bytes());
    floating.extend([1, 4, 0, 0, 0, 0, 0, 0]); // length in 16-byte units, spec 1.4, no features
    floating[10] = checksum(&floating);
    floating.extend(config);
    floating
}

/// The byte that makes a structure's bytes sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn table_checksums_and_counts_are_right() {
        let t = build(4, 0x9fc10);
        assert!(build(MAX_VCPUS, 0).len() <= 1024);
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[0..16]), 0);
        let config = &t[16..];
        assert_eq!(&config[0..4], b"PCMP");
        let len = u16::from_le_bytes([config[4], config[5]]) as usize;
        assert_eq!(len, config.len());
        assert_eq!(sum(config), 0);
        let count = u16::from_le_bytes([config[34], config[35]]);
        assert_eq!(count, 4 + 2 + 24 + 2);
        // The first CPU is the boot processor, the others only enabled.
        assert_eq!(config[44 + 3], CPU_ENABLED | CPU_BOOT);
        assert_eq!(config[44 + 20 + 3], CPU_ENABLED);
    }

    #[test]
    fn cpu_counts_out_of_range_are_refused() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert!(write(&mem, 0).is_err());
        assert!(write(&mem, 33).is_err());
        assert!(write(&mem, 2).is_ok());
    }
}
