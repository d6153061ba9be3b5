//! capsa-vmm: a small KVM virtual machine monitor in Firecracker's mould. It boots a `vmlinux`
//! (PVH) or bzImage with an initramfs, gives the guest a serial console, an i8042 for reset, a
//! boot timer, and virtio-mmio block, net (tap), console (named ports) and vsock devices, and reports why the VM stopped.
//!
//! - [`vstate`]: KVM VM, vCPUs and guest memory;
//! - [`arch`]: x86-64 layout, boot protocols, registers, CPUID, MSRs, MP table;
//! - [`devices`]: buses, legacy devices, virtio transport and devices;
//! - [`builder`]: config to running VM; [`event_loop`]: the device thread;
//! - [`handed`]: descriptors handed by a parent (a jailed VMM opens no host path);
//! - [`snapshot`]: a stopped VM's state and memory files, and restoring from them.

pub mod arch;
pub mod builder;
pub mod config;
pub mod devices;
pub mod event_loop;
pub mod handed;
pub mod seccomp;
pub mod snapshot;
pub mod timing;
pub mod vstate;

pub use builder::{BuildError, Machine, RunReport};
pub use config::{ConsoleConfig, DiskConfig, NetConfig, SerialOutput, VmConfig, VsockConfig};
pub use snapshot::RestoreConfig;
pub use vstate::vcpu::ExitReason;
