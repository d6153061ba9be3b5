//! Where things live in guest physical memory. The low addresses follow the PC's conventions
//! (and Firecracker's choices), so both the PVH and the 64-bit Linux boot protocol find what
//! they expect.

/// The GDT the VMM writes for the boot vCPU.
pub const BOOT_GDT: u64 = 0x500;
/// An empty IDT: the guest installs its own before it enables interrupts.
pub const BOOT_IDT: u64 = 0x520;
/// PVH's `hvm_start_info`, then its memory map and module list.
pub const PVH_INFO: u64 = 0x6000;
pub const PVH_MEMMAP: u64 = 0x6040;
pub const PVH_MODLIST: u64 = 0x6f00;
/// The Linux "zero page" (`boot_params`) for the 64-bit boot protocol.
pub const ZERO_PAGE: u64 = 0x7000;
/// Top of the boot stack for the 64-bit protocol.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Identity page tables for the 64-bit protocol: PML4, PDPT, and four PDs of 2 MiB pages
/// (0xb000..0xf000) covering the low 4 GiB.
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
pub const PD_COUNT: u64 = 4;
/// The kernel command line, and its largest size (Linux's COMMAND_LINE_SIZE on x86 is 2048).
pub const CMDLINE: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 2048;
/// Start of the extended BIOS data area; the MP table is written here.
pub const EBDA: u64 = 0x9fc00;
/// Where RAM resumes above the legacy hole: kernels load at or above it.
pub const HIMEM: u64 = 0x10_0000;

/// The MMIO gap below 4 GiB: guest RAM never overlaps it, virtio-mmio devices live at its start.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// One 4 KiB window per virtio-mmio device.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The IOAPIC and local APIC, where the MP table says they are.
pub const IOAPIC: u64 = 0xfec0_0000;
pub const LAPIC: u64 = 0xfee0_0000;

/// Legacy interrupt lines: COM1 on 4, virtio devices from 5 up to the IOAPIC's last pin.
pub const SERIAL_IRQ: u32 = 4;
pub const FIRST_VIRTIO_IRQ: u32 = 5;
pub const LAST_IRQ: u32 = 23;

/// KVM needs three pages for the TSS and one for the identity map, inside the MMIO gap's top.
pub const KVM_TSS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP: u64 = 0xfffb_c000;
