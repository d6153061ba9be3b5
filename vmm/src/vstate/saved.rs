//! What KVM holds of a stopped VM, read out for a snapshot and written back on restore: each
//! vCPU's registers, FPU/XSAVE, local APIC, MSRs, pending events and run state, and the VM's
//! in-kernel PIC, IOAPIC, PIT and clock.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("KVM {what} failed on {on}: {source}")]
    Kvm {
        what: &'static str,
        on: String,
        source: kvm_ioctls::Error,
    },
    #[error("KVM {what} on {on} handled {done} of {wanted} MSRs (MSR {index:#x} refused)")]
    Msrs {
        what: &'static str,
        on: String,
        done: usize,
        wanted: usize,
        index: u32,
    },
    #[error("{on}: {what} has too many entries for KVM")]
    TooMany { on: String, what: &'static str },
}

/// MSRs saved besides those KVM lists as saveable (KVM_GET_MSR_INDEX_LIST): the MTRR default
/// type the VMM sets at boot and TSC_AUX (RDTSCP's value), which KVM may leave out of the list.
const EXTRA_MSRS: &[u32] = &[
    0x2ff,       // MTRR_DEF_TYPE
    0xc000_0103, // TSC_AUX
];

/// One vCPU, stopped outside KVM_RUN with its last exit completed.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
}

fn kvm_err<'a>(what: &'static str, on: &'a str) -> impl Fn(kvm_ioctls::Error) -> StateError + 'a {
    move |source| StateError::Kvm {
        what,
        on: on.to_string(),
        source,
    }
}

/// KVM's limit on CPUID entries (KVM_MAX_CPUID_ENTRIES).
const MAX_CPUID_ENTRIES: usize = 256;

impl VcpuState {
    /// Reads vCPU `index`'s state, with every MSR of `msr_indices` (and [`EXTRA_MSRS`]) KVM
    /// lets it read. Its thread has left KVM_RUN after completing any pending port or MMIO
    /// exit (see `Vcpu::complete_pending_exit`).
    pub fn save(fd: &VcpuFd, index: u8, msr_indices: &[u32]) -> Result<Self, StateError> {
        let on = format!("vCPU {index}");
        let msrs = read_msrs(fd, &on, msr_indices)?;
        Ok(Self {
            cpuid: fd
                .get_cpuid2(MAX_CPUID_ENTRIES)
                .map_err(kvm_err("KVM_GET_CPUID2", &on))?
                .as_slice()
                .to_vec(),
            mp_state: fd
                .get_mp_state()
                .map_err(kvm_err("KVM_GET_MP_STATE", &on))?,
            regs: fd.get_regs().map_err(kvm_err("KVM_GET_REGS", &on))?,
            sregs: fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS", &on))?,
            xsave: fd.get_xsave().map_err(kvm_err("KVM_GET_XSAVE", &on))?,
            xcrs: fd.get_xcrs().map_err(kvm_err("KVM_GET_XCRS", &on))?,
            debug_regs: fd
                .get_debug_regs()
                .map_err(kvm_err("KVM_GET_DEBUGREGS", &on))?,
            lapic: fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC", &on))?,
            msrs,
            events: fd
                .get_vcpu_events()
                .map_err(kvm_err("KVM_GET_VCPU_EVENTS", &on))?,
        })
    }

    /// Writes the state into a new vCPU, in the order KVM needs: CPUID before anything that
    /// depends on the features it exposes, sregs (APIC base) before the LAPIC, MSRs (the TSC)
    /// and pending events last.
    pub fn restore(&self, fd: &VcpuFd, index: u8) -> Result<(), StateError> {
        let on = format!("vCPU {index}");
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|_| StateError::TooMany {
            on: on.clone(),
            what: "CPUID",
        })?;
        fd.set_cpuid2(&cpuid)
            .map_err(kvm_err("KVM_SET_CPUID2", &on))?;
        fd.set_mp_state(self.mp_state)
            .map_err(kvm_err("KVM_SET_MP_STATE", &on))?;
        fd.set_regs(&self.regs)
            .map_err(kvm_err("KVM_SET_REGS", &on))?;
        fd.set_sregs(&self.sregs)
            .map_err(kvm_err("KVM_SET_SREGS", &on))?;
        // SAFETY: `self.xsave` is a whole kvm_xsave read by KVM_GET_XSAVE (the legacy 4 KiB
        // layout, no trailing flexible array), so KVM reads only within it.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(kvm_err("KVM_SET_XSAVE", &on))?;
        fd.set_xcrs(&self.xcrs)
            .map_err(kvm_err("KVM_SET_XCRS", &on))?;
        fd.set_debug_regs(&self.debug_regs)
            .map_err(kvm_err("KVM_SET_DEBUGREGS", &on))?;
        fd.set_lapic(&self.lapic)
            .map_err(kvm_err("KVM_SET_LAPIC", &on))?;
        let msrs = Msrs::from_entries(&self.msrs).map_err(|_| StateError::TooMany {
            on: on.clone(),
            what: "the MSR list",
        })?;
        let set = fd.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS", &on))?;
        if set != self.msrs.len() {
            return Err(StateError::Msrs {
                what: "KVM_SET_MSRS",
                on,
                done: set,
                wanted: self.msrs.len(),
                index: self.msrs[set].index,
            });
        }
        fd.set_vcpu_events(&self.events)
            .map_err(kvm_err("KVM_SET_VCPU_EVENTS", &on))
    }
}

/// Reads every MSR of `indices` and [`EXTRA_MSRS`] that KVM can read: KVM_GET_MSRS stops at
/// the first it refuses, which is left out, and the rest are read on.
fn read_msrs(fd: &VcpuFd, on: &str, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, StateError> {
    let mut wanted: Vec<u32> = indices.iter().chain(EXTRA_MSRS).copied().collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut saved = Vec::new();
    let mut rest = &wanted[..];
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| StateError::TooMany {
            on: on.to_string(),
            what: "the MSR list",
        })?;
        let read = fd
            .get_msrs(&mut msrs)
            .map_err(kvm_err("KVM_GET_MSRS", on))?;
        saved.extend_from_slice(&msrs.as_slice()[..read]);
        // Skip the MSR KVM refused, if any.
        rest = rest.get(read + 1..).unwrap_or_default();
    }
    Ok(saved)
}

/// The VM's in-kernel devices: both PICs, the IOAPIC, the PIT, and the kvmclock base.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

fn irqchip(fd: &VmFd, chip_id: u32) -> Result<kvm_irqchip, StateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    fd.get_irqchip(&mut chip)
        .map_err(kvm_err("KVM_GET_IRQCHIP", "the VM"))?;
    Ok(chip)
}

impl VmState {
    pub fn save(fd: &VmFd) -> Result<Self, StateError> {
        Ok(Self {
            pic_master: irqchip(fd, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: irqchip(fd, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: irqchip(fd, KVM_IRQCHIP_IOAPIC)?,
            pit: fd.get_pit2().map_err(kvm_err("KVM_GET_PIT2", "the VM"))?,
            clock: fd.get_clock().map_err(kvm_err("KVM_GET_CLOCK", "the VM"))?,
        })
    }

    /// Into a VM whose IRQ chip and PIT exist (`Vm::setup_platform`).
    pub fn restore(&self, fd: &VmFd) -> Result<(), StateError> {
        for chip in [&self.pic_master, &self.pic_slave, &self.ioapic] {
            fd.set_irqchip(chip)
                .map_err(kvm_err("KVM_SET_IRQCHIP", "the VM"))?;
        }
        fd.set_pit2(&self.pit)
            .map_err(kvm_err("KVM_SET_PIT2", "the VM"))?;
        // Only the clock value: the saved flags say which fields KVM filled on the old host.
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..Default::default()
        };
        fd.set_clock(&clock)
            .map_err(kvm_err("KVM_SET_CLOCK", "the VM"))
    }
}
