//! Why one step of `capsa bench` failed. Each variant names the thing and keeps its cause;
//! the text is what the report and the terminal show (a subject's or scenario's failure is
//! written into the report as this text, at the report boundary only).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use crate::container::ContainerError;
use crate::image::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    // --- the run as a whole ---
    /// `--isolation`, `--peers` or `--scenario` names something unknown.
    #[error("{flag} {given:?}: expected one of {}", .allowed.join(", "))]
    UnknownName {
        flag: &'static str,
        given: String,
        allowed: Vec<&'static str>,
    },
    /// The image to run is not in the store.
    #[error("image {name}: {source} (capsa pull or capsa import it first)")]
    NoImage {
        name: String,
        #[source]
        source: ImageError,
    },
    /// A static binary from scripts/build-agent.sh is missing.
    #[error("{name}-static was found neither beside capsa nor in ${var} (scripts/build-agent.sh builds it)")]
    NoStaticBinary {
        name: &'static str,
        var: &'static str,
    },
    /// A file or directory could not be read, written or made.
    #[error("{}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be copied.
    #[error("copying {} to {}: {source}", .from.display(), .to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The report could not be serialised.
    #[error("{0}")]
    Report(#[source] serde_json::Error),
    /// This process's own executable could not be found.
    #[error("{0}")]
    CurrentExe(#[source] std::io::Error),

    // --- timing one command ---
    /// The timed command could not be started.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        program: OsString,
        #[source]
        source: std::io::Error,
    },
    /// A captured stream of a child has no pipe (`stdout`, `stderr`).
    #[error("no {0} pipe")]
    NoPipe(&'static str),
    /// wait4(2) failed.
    #[error("wait4: {0}")]
    Wait(#[source] std::io::Error),

    // --- subjects ---
    /// A workload needs the probe and it was not staged.
    #[error("the probe is not available")]
    NoProbe,
    /// A command of an engine (`capsa run -d`, `runc state`...) could not be run.
    #[error("{command}: {source}")]
    Command {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A command of an engine ran and failed: what it printed on stderr.
    #[error("{command}: {stderr}")]
    Refused { command: String, stderr: String },
    /// A container's record could not be read.
    #[error("{0}")]
    Container(#[from] ContainerError),
    /// A created container has no v1 devices cgroup to open.
    #[error("the container has no v1 devices cgroup")]
    NoDevicesCgroup,
    /// An OCI runtime's `state` gave no pid.
    #[error("{subject} state {id}: no pid")]
    NoPid { subject: String, id: String },
    /// A mount a subject needs failed (`what` names it).
    #[error("{what}: {source}")]
    Mount {
        what: String,
        #[source]
        source: nix::Error,
    },
    /// An OCI runtime spec could not be written.
    #[error("{}: {source}", .path.display())]
    Spec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// The image root could not be read into the bare QEMU peer's initramfs.
    #[error("reading the image root: {0}")]
    ImageRoot(#[source] std::io::Error),
    /// A thread building an initramfs panicked while holding the cache.
    #[error("poisoned lock: another task failed inside")]
    Poisoned,
    /// The bare QEMU peer's guest never reached /init.
    #[error("the guest did not reach /init within {secs} s")]
    BootTimeout { secs: u64 },
    /// The subject cannot remove that isolation layer.
    #[error("{subject} cannot run with {relaxation}")]
    CannotRelax {
        subject: String,
        relaxation: &'static str,
    },
    /// An OCI peer's default spec has no seccomp filter to remove.
    #[error("{0}'s default spec has no seccomp filter to remove")]
    NoSeccompFilter(String),
    /// The subject cannot run a command in a running instance.
    #[error("{0} has no exec")]
    NoExec(String),
    /// The subject cannot publish a port: why.
    #[error("{reason}")]
    CannotPublish { reason: String },

    // --- scenarios ---
    /// A start-latency run did not exit 0 with the marker printed.
    #[error("exit {exit}, marker {}: {stderr}", if *.marker_seen { "seen" } else { "never printed" })]
    StartRun {
        exit: i32,
        marker_seen: bool,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// A VM meant to start from its template booted cold (the template could not be used).
    #[error("it booted cold, not from the VM template: {0}")]
    NotFromTemplate(String),
    /// The overhead probe exited non-zero.
    #[error("the probe exited {exit}: {stderr}")]
    ProbeExited { exit: i32, stderr: String },
    /// The probe's output holds no figures (the tail of its output).
    #[error("no probe figures in its output: {0:?}")]
    NoFigures(String),
    /// The probe's figures line is not JSON.
    #[error("the probe's figures: {source}: {line}")]
    Figures {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    /// No port could be reserved for the TCP probe.
    #[error("no free port on 127.0.0.1: {0}")]
    NoFreePort(#[source] std::io::Error),
    /// The probe's TCP server never answered.
    #[error("the probe server did not answer on 127.0.0.1:{port} within {secs} s: {source}")]
    ServerSilent {
        port: u16,
        secs: u64,
        #[source]
        source: std::io::Error,
    },
    /// The TCP round trips failed.
    #[error("round trips: {0}")]
    RoundTrips(#[source] std::io::Error),
    /// The TCP throughput run failed.
    #[error("throughput: {0}")]
    Throughput(#[source] std::io::Error),

    // --- the isolation matrix ---
    /// The escape probe printed no findings in an instance.
    #[error("no findings in the probe's output (exit {exit}): {stderr}")]
    NoFindings { exit: i32, stderr: String },
    /// The escape probe printed no findings on the host.
    #[error("no findings from the probe on the host: {0}")]
    NoHostFindings(String),
    /// The hostile image's layer could not be archived.
    #[error("the hostile image's layer: {0}")]
    HostileLayer(#[source] std::io::Error),
    /// The hostile image could not be named or imported.
    #[error("{0}")]
    HostileName(#[source] ImageError),
    #[error("importing the hostile image: {0}")]
    HostileImport(#[source] ImageError),
    /// A subject has no counterpart running the hostile image.
    #[error("no hostile-image counterpart of this subject")]
    NoCounterpart,
    /// A command run inside an instance could not be started.
    #[error("{program:?}: {source}")]
    Exec {
        program: OsString,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for a command run inside an instance failed.
    #[error("{0}")]
    ExecWait(#[source] std::io::Error),
    /// A command run inside an instance did not finish in time.
    #[error("no answer within {secs} s")]
    NoAnswer { secs: u64 },
    /// The exec-window watcher wrote no findings.
    #[error("the watcher left no findings")]
    NoWatcherFindings,
    /// The instance the live rows need could not be started.
    #[error("starting the instance: {0}")]
    Starting(#[source] Arc<BenchError>),
    /// The subject keeps no record of an instance on the host.
    #[error("{0} keeps no record of the instance on the host")]
    NoRecords(String),
    /// A ptrace request on a thread failed.
    #[error("{request} of thread {tid}: {source}")]
    Ptrace {
        request: &'static str,
        tid: i32,
        #[source]
        source: std::io::Error,
    },
    /// The probe's findings lack a row.
    #[error("the probe did not report it")]
    NotReported,
    /// One failure shared by several subjects or rows.
    #[error(transparent)]
    Shared(Arc<BenchError>),
}

impl BenchError {
    /// `path` and the I/O error met there.
    pub fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BenchError {
        let path = path.into();
        move |source| BenchError::File { path, source }
    }

    /// `command` could not be run.
    pub fn command(command: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let command = command.into();
        move |source| BenchError::Command { command, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::from(kind)
    }

    #[test]
    fn messages_read_as_before_and_keep_their_cause() {
        let e = BenchError::UnknownName {
            flag: "--scenario",
            given: "speed".into(),
            allowed: vec!["start", "memory"],
        };
        assert_eq!(
            e.to_string(),
            "--scenario \"speed\": expected one of start, memory"
        );
        let e = BenchError::NoStaticBinary {
            name: "capsa-probe",
            var: "CAPSA_PROBE",
        };
        assert_eq!(
            e.to_string(),
            "capsa-probe-static was found neither beside capsa nor in $CAPSA_PROBE (scripts/build-agent.sh builds it)"
        );
        let e = BenchError::StartRun {
            exit: 125,
            marker_seen: false,
            stderr: "capsa: no such image".into(),
        };
        assert_eq!(
            e.to_string(),
            "exit 125, marker never printed: capsa: no such image"
        );
        let e = BenchError::file("/x/y")(io(std::io::ErrorKind::NotFound));
        assert_eq!(
            e.to_string(),
            format!("/x/y: {}", io(std::io::ErrorKind::NotFound))
        );
        assert!(e.source().is_some(), "the I/O error is kept as the source");
        let e = BenchError::Spawn {
            program: "no-such-binary".into(),
            source: io(std::io::ErrorKind::NotFound),
        };
        assert!(e.to_string().starts_with("cannot run \"no-such-binary\": "));
    }

    #[test]
    fn a_shared_failure_reads_as_its_cause() {
        let cause = Arc::new(BenchError::command("capsa run -d")(io(
            std::io::ErrorKind::PermissionDenied,
        )));
        let starting = BenchError::Starting(cause.clone());
        assert_eq!(
            starting.to_string(),
            format!("starting the instance: {cause}")
        );
        assert!(starting.source().is_some());
        assert_eq!(
            BenchError::Shared(cause.clone()).to_string(),
            cause.to_string()
        );
    }
}
