//! capsa: run one OCI image as a Linux container or inside a microVM, and measure both.
//!
//! The library holds the whole engine; `main.rs` only parses flags (see [`cli`]).
//! Folders own one concept each:
//! - [`image`]: references, the content-addressed store, the registry client, archives;
//! - [`net`]: the default bridge, veth pairs, addresses, nftables NAT and published ports;
//! - [`container`]: spec building, on-disk state, the lifecycle verbs and the monitor;
//! - [`linux`]: the isolation core (namespaces, rootfs, cgroups, capabilities, seccomp),
//!   in the `capsa-core` crate with the agent protocol, which the guest agent links alone;
//! - [`api`]: the verbs every front end calls, each over the container's [`container::sandbox::Sandbox`];
//! - [`volume`]: named and anonymous volumes (directories for containers, disks for VMs);
//! - [`host`]: what this machine offers (cgroup mode, KVM kind, engines), for `info`;
//! - [`template`]: Go templates for every `--format`;
//! - [`serve`]: the Docker Engine API server (`capsa serve`), a front end beside `cli`;
//! - [`oci_runtime`]: `capsa-runc`, capsa as an OCI runtime for containerd and podman.

pub mod api;
pub mod bench;
pub mod build;
pub mod cli;
pub mod container;
pub mod events;
pub mod fsutil;
pub mod host;
pub mod ids;
pub mod image;
pub use capsa_core::linux;
pub mod net;
pub mod oci_runtime;
pub mod printable;
pub mod root;
pub mod serve;
pub mod template;
pub mod timefmt;
pub mod vm;
pub mod volume;
