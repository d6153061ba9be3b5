//! KVM state: the VM, its vCPUs and guest memory. Every KVM ioctl is issued from here.

pub mod memory;
pub mod saved;
pub mod vcpu;
pub mod vm;
