//! The Linux isolation core: everything that turns an OCI runtime spec into an isolated
//! process. It depends on nothing else in capsa (the guest agent runs workloads through it).
//!
//! - [`process`]: the parent/init process model (clone, sync channel, the init's set-up);
//! - [`rootfs`] and [`devices`]: overlay root, mounts, pivot_root, /dev, masked paths;
//! - [`devpts`]: a pty on a container's own devpts (the init's terminal, `exec -t`'s);
//! - [`inroot`]: every path inside a container's root (or a layer) resolved inside it by the
//!   kernel, and the operation done on the descriptor;
//! - [`cgroups`]: v1 and v2 behind one trait;
//! - [`capabilities`], [`seccomp`], [`user`]: what the workload may do and who it is;
//! - [`sys`]: the raw system calls that nix does not wrap, each wrapped once.

pub mod capabilities;
pub mod cgroups;
pub mod devices;
pub mod devpts;
pub mod hooks;
pub mod inroot;
pub mod mountapi;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod sys;
pub mod tty;
pub mod user;
