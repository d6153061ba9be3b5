//! The KVM VM: its file descriptor, guest memory slots, in-kernel interrupt controllers and PIT.
//! Every VM-level ioctl the VMM issues is wrapped here once.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::memory::GuestMemory;
use crate::arch::x86_64::layout::{KVM_IDENTITY_MAP, KVM_TSS};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available and are you allowed to use it?)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    #[error("KVM lacks {0}, which capsa-vmm needs")]
    MissingCapability(&'static str),
    #[error("KVM_CREATE_VM failed: {0}")]
    Create(kvm_ioctls::Error),
    #[error("KVM refused guest memory slot {slot}: {source}")]
    MemorySlot {
        slot: u32,
        source: kvm_ioctls::Error,
    },
    #[error("KVM {what} failed: {source}")]
    Setup {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

/// The VM and the KVM system handle it came from (vCPUs need the latter for CPUID).
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    /// The MSRs KVM can save and restore, asked for at creation, before any seccomp filter.
    msr_indices: Vec<u32>,
}

impl Vm {
    /// Opens KVM, creates the VM and checks what the rest of the VMM relies on.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::ApiVersion(version));
        }
        use kvm_ioctls::Cap;
        for (cap, name) in [
            (Cap::Irqchip, "an in-kernel IRQ chip"),
            (Cap::Ioeventfd, "ioeventfd"),
            (Cap::Irqfd, "irqfd"),
            (Cap::UserMemory, "user memory slots"),
            (Cap::SetTssAddr, "KVM_SET_TSS_ADDR"),
            (Cap::Pit2, "the in-kernel PIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCapability(name));
            }
        }
        let msr_indices = kvm
            .get_msr_index_list()
            .map_err(|source| VmError::Setup {
                what: "KVM_GET_MSR_INDEX_LIST",
                source,
            })?
            .as_slice()
            .to_vec();
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        Ok(Self {
            kvm,
            fd,
            msr_indices,
        })
    }

    /// The MSRs KVM lists as saveable (KVM_GET_MSR_INDEX_LIST), for snapshots.
    pub fn msr_indices(&self) -> &[u32] {
        &self.msr_indices
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Hands every region of guest memory to KVM, one slot each.
    pub fn register_memory(&self, mem: &GuestMemory) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let entry = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which outlives the VM (the
            // builder keeps both until the VM is torn down), and slots do not overlap.
            unsafe { self.fd.set_user_memory_region(entry) }
                .map_err(|source| VmError::MemorySlot { slot, source })?;
        }
        Ok(())
    }

    /// The x86 platform KVM emulates in the kernel: TSS and identity-map pages, PIC+IOAPIC, PIT.
    pub fn setup_platform(&self) -> Result<(), VmError> {
        let setup = |what| move |source| VmError::Setup { what, source };
        self.fd
            .set_identity_map_address(KVM_IDENTITY_MAP)
            .map_err(setup("KVM_SET_IDENTITY_MAP_ADDR"))?;
        self.fd
            .set_tss_address(KVM_TSS as usize)
            .map_err(setup("KVM_SET_TSS_ADDR"))?;
        self.fd
            .create_irq_chip()
            .map_err(setup("KVM_CREATE_IRQCHIP"))?;
        // The speaker port is left to the guest's writes going nowhere, as Firecracker does.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(setup("KVM_CREATE_PIT2"))?;
        Ok(())
    }

    /// Makes a write of `queue` to `addr` signal `event` without leaving the kernel.
    pub fn register_ioevent(&self, event: &EventFd, addr: u64, queue: u32) -> Result<(), VmError> {
        self.fd
            .register_ioevent(event, &IoEventAddress::Mmio(addr), queue)
            .map_err(|source| VmError::Setup {
                what: "KVM_IOEVENTFD",
                source,
            })
    }

    /// Makes a write to `event` raise interrupt line `gsi`.
    pub fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(event, gsi)
            .map_err(|source| VmError::Setup {
                what: "KVM_IRQFD",
                source,
            })
    }
}
