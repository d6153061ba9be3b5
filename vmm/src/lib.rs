//! capsa-vmm: capsa's microVM monitor on KVM.
//!
//! Empty on purpose: the VMM (KVM set-up, PVH boot, virtio-mmio devices, boot timer) lands
//! with its own issue. Nothing here pretends to work before then.
