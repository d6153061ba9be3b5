//! The boot vCPU's registers for each boot protocol: flat segments from the boot GDT, and for the
//! 64-bit protocol identity-mapped page tables and long mode already on.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::gdt;
use super::layout::{
    BOOT_GDT, BOOT_IDT, BOOT_STACK, PD, PDPT, PD_COUNT, PML4, PVH_INFO, ZERO_PAGE,
};
use crate::vstate::memory::GuestMemory;

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// How the guest expects to be entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Xen's PVH: 32-bit protected mode, paging off, `%ebx` = `hvm_start_info`.
    Pvh,
    /// Linux's 64-bit protocol: long mode, identity paging, `%rsi` = the zero page.
    Linux64,
}

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write the boot {what} into guest memory: {source}")]
    Memory {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
    #[error("KVM {what} failed: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

fn kvm(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

/// General registers: the entry point, the boot structure's address and a stack.
pub fn setup_regs(vcpu: &VcpuFd, entry: u64, protocol: BootProtocol) -> Result<(), RegsError> {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match protocol {
        BootProtocol::Pvh => regs.rbx = PVH_INFO,
        BootProtocol::Linux64 => {
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
            regs.rsi = ZERO_PAGE;
        }
    }
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))
}

/// x87 and SSE control words as after FNINIT, with all SSE exceptions masked.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))
}

/// Segment and control registers, the GDT (and for Linux64 the page tables) in guest memory.
pub fn setup_sregs(
    mem: &GuestMemory,
    vcpu: &VcpuFd,
    protocol: BootProtocol,
) -> Result<(), RegsError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let code = match protocol {
        BootProtocol::Pvh => gdt::CODE_32,
        BootProtocol::Linux64 => gdt::CODE_64,
    };
    let table = [
        gdt::entry(0, 0, 0),
        gdt::entry(code, 0, 0xfffff),
        gdt::entry(gdt::DATA, 0, 0xfffff),
        gdt::entry(gdt::TSS, 0, 0xfffff),
    ];
    write_gdt(mem, &table)?;
    load_segments(&mut sregs, &table);
    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 = CR0_PE;
            sregs.cr4 = 0;
        }
        BootProtocol::Linux64 => {
            write_page_tables(mem)?;
            sregs.cr3 = PML4;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))
}

fn write_gdt(mem: &GuestMemory, table: &[u64]) -> Result<(), RegsError> {
    for (i, entry) in table.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT + 8 * i as u64))
            .map_err(|source| RegsError::Memory {
                what: "GDT",
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT))
        .map_err(|source| RegsError::Memory {
            what: "IDT",
            source,
        })
}

fn load_segments(sregs: &mut kvm_sregs, table: &[u64; 4]) {
    sregs.gdt.base = BOOT_GDT;
    sregs.gdt.limit = (std::mem::size_of_val(table) - 1) as u16;
    sregs.idt.base = BOOT_IDT;
    sregs.idt.limit = 7;
    let code = gdt::segment(1, table[1]);
    let data = gdt::segment(2, table[2]);
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = gdt::segment(3, table[3]);
}

/// Identity-maps the low 4 GiB with 2 MiB pages: RAM for the kernel or test guest, and the MMIO
/// gap where the virtio devices live (Linux replaces these tables early; the test guest keeps them).
fn write_page_tables(mem: &GuestMemory) -> Result<(), RegsError> {
    let err = |source| RegsError::Memory {
        what: "page tables",
        source,
    };
    mem.write_obj(PDPT | 0x03, GuestAddress(PML4))
        .map_err(err)?;
    for gib in 0..PD_COUNT {
        let pd = PD + gib * 0x1000;
        mem.write_obj(pd | 0x03, GuestAddress(PDPT + gib * 8))
            .map_err(err)?;
        for i in 0..512u64 {
            let addr = (gib << 30) | (i << 21);
            mem.write_obj(addr | 0x83, GuestAddress(pd + i * 8))
                .map_err(err)?;
        }
    }
    Ok(())
}
