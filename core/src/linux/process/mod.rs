//! The process model: the parent clones the container's init straight into its namespaces
//! (no re-exec of capsa), places it in its cgroup, then lets it set itself up; the init
//! reports ready and blocks on the exec fifo until `start` (runc's create/start split).
//!
//! - [`spawn`]: the parent's side;
//! - [`init`]: what runs in the new process until execve;
//! - [`join`]: entering a running container for `exec`;
//! - [`stdio`]: the streams of a process entering a container (pipes or a pty made for it);
//! - [`capsa_init`]: the small program `--init` and `exec` start the workload through;
//! - [`config`]: what the parent hands the init (both sides read it);
//! - [`channel`]: the messages between the two;
//! - [`exec_fifo`]: the start gate, which also carries an exec failure back to `start`.

pub mod capsa_init;
pub mod channel;
pub mod config;
pub mod exec_fifo;
pub mod init;
pub mod join;
pub mod sigforward;
pub mod spawn;
pub mod stdio;

pub use config::{InitConfig, InitStdio};
pub use spawn::{spawn, SpawnError, Spawned};
pub use stdio::Stdio;
