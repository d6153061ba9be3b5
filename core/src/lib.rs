//! capsa-core: what both sides of capsa run, the host engine (`capsa`) and the guest agent
//! (`capsa-agent`, PID 1 inside a microVM). It holds no registry, TLS, CLI or bench code, so
//! the agent's static binary carries none of it.
//!
//! - [`linux`]: the isolation core (namespaces, rootfs, cgroups, capabilities, seccomp);
//! - [`protocol`]: the host <-> guest-agent messages;
//! - [`tar_copy`]: `cp`'s tar streams (written from a tree, extracted into one);
//! - [`layer_diff`]: an overlay's writable layer as an image layer tar (whiteouts, opaque
//!   directories), for `commit` and builds;
//! - [`tar_guard`]: a bound on the tar headers the `tar` crate buffers whole;
//! - [`netlink`]: the rtnetlink requests (links, addresses, routes) in any namespace;
//! - [`fsutil`]: atomic file replacement.

pub mod fsutil;
pub mod layer_diff;
pub mod linux;
pub mod netlink;
pub mod protocol;
pub mod tar_copy;
pub mod tar_guard;
