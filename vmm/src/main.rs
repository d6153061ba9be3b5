//! `capsa-vmm`: flags in, a VM run, an exit status that says why it stopped.
//!   0 the guest stopped itself (reboot / i8042 reset / power-off event), or stopped at its
//!     snapshot point and the snapshot was written (--snapshot-to)
//!   1 the VM could not be set up (bad kernel, memory size, disk, KVM unavailable, a refused
//!     snapshot ...)
//!   2 bad flags
//!   3 the guest crashed (triple fault, halt with nothing to run, KVM emulation failure)
//!   4 the VMM failed while the guest ran

use std::path::PathBuf;
use std::process::ExitCode;

use capsa_vmm::timing::StartTime;
use capsa_vmm::vstate::memory::parse_size;
use capsa_vmm::{
    ConsoleConfig, DiskConfig, Machine, NetConfig, RestoreConfig, SerialOutput, VmConfig,
    VsockConfig,
};
use clap::Parser;

#[derive(Parser)]
#[command(name = "capsa-vmm", version, about = "capsa's microVM monitor on KVM")]
struct Flags {
    /// Guest kernel: an ELF vmlinux (booted by PVH when it has the note) or a bzImage
    #[arg(long, required_unless_present = "restore_from")]
    kernel: Option<PathBuf>,
    /// Initramfs image
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line (virtio-mmio devices are appended)
    #[arg(long, default_value = "console=ttyS0 reboot=k panic=-1")]
    cmdline: String,
    /// Guest memory: bytes or with K, M, G
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    mem: u64,
    /// Number of vCPUs
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// A virtio-blk disk: PATH[,ro][,id=SERIAL] (repeatable)
    #[arg(long = "disk")]
    disks: Vec<DiskConfig>,
    /// A virtio-net device on a tap: tap=NAME[,mac=MAC] (repeatable; the tap is created if missing)
    #[arg(long = "net")]
    nets: Vec<NetConfig>,
    /// A named virtio-console port with its host side on a Unix socket: name=NAME,uds=PATH (repeatable)
    #[arg(long = "console")]
    consoles: Vec<ConsoleConfig>,
    /// Hybrid vsock: cid=N,uds=PATH
    #[arg(long)]
    vsock: Option<VsockConfig>,
    /// A virtio-balloon with free page reporting: memory the guest frees goes back to the host
    /// (to the snapshot's shared pages in a restored VM)
    #[arg(long)]
    free_page_reporting: bool,
    /// Where the serial console goes: stdout, file=PATH, none
    #[arg(long, default_value = "stdout")]
    serial: SerialOutput,
    /// Run without the per-thread seccomp filters (for debugging a filter kill)
    #[arg(long)]
    no_seccomp: bool,
    /// Write a snapshot (DIR/state, DIR/memory) when the guest reaches its snapshot point
    /// (writes 124 to the boot-timer port), then stop
    #[arg(long, value_name = "DIR", conflicts_with = "restore_from")]
    snapshot_to: Option<PathBuf>,
    /// Resume the VM a snapshot directory holds instead of booting a kernel. Give its
    /// devices' host sides again, as many and in the same order: --disk (maybe other files),
    /// --net (another tap; the guest keeps its MAC), --console (the same port names), --vsock
    /// (another socket and maybe another CID; the guest's connections are reset)
    #[arg(long, value_name = "DIR", conflicts_with_all = [
        "kernel", "initrd", "cmdline", "mem", "vcpus", "free_page_reporting",
    ])]
    restore_from: Option<PathBuf>,
}

fn main() -> ExitCode {
    let start = StartTime::from_env_or_now();
    let flags = Flags::parse();
    let built = match flags.restore_from.clone() {
        Some(dir) => Machine::restore(
            &RestoreConfig {
                dir,
                serial: flags.serial,
                disks: flags.disks,
                nets: flags.nets,
                consoles: flags.consoles,
                vsock: flags.vsock,
                seccomp: !flags.no_seccomp,
            },
            start,
        ),
        None => Machine::build(&boot_config(flags), start),
    };
    let machine = match built {
        Ok(m) => m,
        Err(e) => {
            eprintln!("capsa-vmm: {e}");
            return ExitCode::from(1);
        }
    };
    match machine.run() {
        Ok(report) => {
            eprintln!("capsa-vmm: {}", report.reason);
            ExitCode::from(report.reason.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("capsa-vmm: {e}");
            ExitCode::from(4)
        }
    }
}

fn boot_config(flags: Flags) -> VmConfig {
    VmConfig {
        // clap requires --kernel when there is no --restore-from.
        kernel: flags.kernel.unwrap_or_default(),
        initrd: flags.initrd,
        cmdline: flags.cmdline,
        mem_bytes: flags.mem,
        vcpus: flags.vcpus,
        disks: flags.disks,
        vsock: flags.vsock,
        nets: flags.nets,
        consoles: flags.consoles,
        free_page_reporting: flags.free_page_reporting,
        serial: flags.serial,
        seccomp: !flags.no_seccomp,
        snapshot_to: flags.snapshot_to,
    }
}
