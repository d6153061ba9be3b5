//! capsa's guest agent. It runs as PID 1 from the VM's initramfs:
//! - [`guest`]: the guest's own set-up (/proc, /sys, /dev, cgroup2, hostname) and power-off;
//! - [`channel`]: the byte stream to the host (the `capsa.agent` virtio-console port);
//! - [`disks`]: the image's layers and the writable layer, found by block-device serial;
//! - [`workload`]: the container, created and run through capsa's isolation core
//!   (namespaces, capabilities, seccomp, cgroup v2) exactly as on a host;
//! - [`pod`]: a pod's VM: its containers' roots, each a directory on the pod's disk;
//! - [`restore`]: after a VM template's restore: the RNG reseeded, the disks probed again;
//! - [`server`]: the protocol loop (requests, output, exits, reaping).
//!
//! The protocol's types live in `capsa_core::protocol`, which the host side shares.

pub mod channel;
pub mod copy;
pub mod disks;
pub mod guest;
pub mod pod;
pub mod restore;
pub mod server;
pub mod top;
pub mod workload;
