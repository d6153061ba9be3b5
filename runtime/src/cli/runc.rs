//! `capsa-runc` (capsa invoked under that name): runc's command layout over
//! [`crate::oci_runtime`], for containerd's runc v2 shim and podman's conmon. Errors are one
//! line on stderr and, with `--log`, in that file (`--log-format json`: one
//! `{"level":"error","msg":...}` object a line, which the shim reads back); exit status 1.

use crate::oci_runtime::exec::{ExecOptions, ProcessFlags};
use crate::oci_runtime::lifecycle::{self, CreateOptions};
use crate::oci_runtime::{state, RuntimeError, DEFAULT_ROOT};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The name that selects this front end (argv[0]'s file name).
pub const ARGV0: &str = "capsa-runc";

/// capsa's OCI runtime, with runc's commands and flags.
#[derive(Parser, Debug)]
#[command(name = ARGV0, version, disable_help_subcommand = true)]
struct RuncCli {
    /// Where container state is kept.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Where errors (and with --debug, each command) are logged, besides stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log each command as well.
    #[arg(long, global = true)]
    debug: bool,
    /// Refused: capsa-runc manages cgroupfs directly.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Create and start a container; without --detach, wait for it and remove it.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's process.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Remove a container (--force: also a running one).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run another process in a running container.
    Exec(ExecArgs),
    /// List the container's processes.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
    },
    /// Freeze every process of the container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Update a container's resource limits from a JSON file (- for stdin).
    Update {
        #[arg(short, long)]
        resources: PathBuf,
        id: String,
    },
    /// Print the container's counters as JSON events (once with --stats, else every
    /// interval until it stops), and its OOM kills.
    Events {
        #[arg(long)]
        stats: bool,
        /// Seconds between two observations.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        id: String,
    },
    /// Print what this runtime supports, as JSON.
    Features,
    /// Write a starting config.json in the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Refused: not supported by capsa-runc.
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Refused: not supported by capsa-runc.
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted: capsa always pivots into the root (it needs no MS_MOVE fallback).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted: capsa never makes a session keyring.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Only 0: passing extra descriptors is not supported.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(short, long)]
    tty: bool,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short, long)]
    env: Vec<String>,
    /// UID[:GID].
    #[arg(short, long)]
    user: Option<String>,
    /// Only 0: passing extra descriptors is not supported.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The second name: the same runtime, whose containers run in microVMs (a pod per VM).
pub const VM_ARGV0: &str = "capsa-vm";

/// argv[0]'s file name.
fn invoked_name() -> Option<std::ffi::OsString> {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_os_string()))
}

/// Whether this process was started as `capsa-runc` or `capsa-vm`.
pub fn invoked_as_runtime() -> bool {
    invoked_name().is_some_and(|n| n == ARGV0 || n == VM_ARGV0)
}

/// The runtime's entry point; returns the exit status.
pub fn main() -> i32 {
    let cli = match RuncCli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let log = Log {
        path: cli.log.clone(),
        format: cli.log_format,
    };
    if cli.debug {
        log.write("debug", &format!("{:?}", cli.command));
    }
    let result = if cli.systemd_cgroup {
        Err(RuntimeError::Usage(
            "--systemd-cgroup is not supported: capsa-runc manages cgroupfs itself \
             (configure the caller for cgroupfs: containerd SystemdCgroup = false, \
             podman --cgroup-manager cgroupfs)"
                .into(),
        ))
    } else {
        dispatch(&cli.root, &log, cli.command)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            log.error(&e.to_string());
            match e {
                RuntimeError::Exec { code, .. } if code > 0 => code,
                _ => 1,
            }
        }
    }
}

/// Writes one line to stdout; false once stdout is gone (a reader that went away is no
/// reason to panic).
fn say_line(text: std::fmt::Arguments) -> bool {
    writeln!(std::io::stdout().lock(), "{text}").is_ok()
}

macro_rules! say {
    ($($t:tt)*) => {
        say_line(format_args!($($t)*))
    };
}

/// Where errors go.
struct Log {
    path: Option<PathBuf>,
    format: LogFormat,
}

impl Log {
    fn line(&self, level: &str, msg: &str) -> String {
        match self.format {
            LogFormat::Json => serde_json::json!({
                "level": level,
                "msg": msg,
                "time": crate::timefmt::rfc3339(std::time::SystemTime::now()),
            })
            .to_string(),
            LogFormat::Text => format!("{level}: {msg}"),
        }
    }

    fn write(&self, level: &str, msg: &str) {
        let line = self.line(level, msg);
        if let Some(p) = &self.path {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p);
            if let Ok(mut f) = file {
                let _ = writeln!(f, "{line}");
                return;
            }
        }
        if level != "debug" {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }

    fn error(&self, msg: &str) {
        let msg = crate::printable::escape_controls(msg).into_owned();
        self.write("error", &msg);
        if self.path.is_some() {
            let _ = writeln!(std::io::stderr(), "{ARGV0}: {msg}");
        }
    }
}

/// `--preserve-fds N`: the caller's descriptors 3 to 3+N-1 go to the workload, so each must
/// be one the caller passed (a caller that miscounts gets an error, not a workload missing
/// a socket). A descriptor that came across the caller's exec has no close-on-exec flag;
/// every one capsa opens has it (so one of ours that took a gap in the range, such as the
/// `--log` file, is refused here, and would be closed at the workload's exec anyway).
fn check_preserved_fds(n: u32) -> Result<(), RuntimeError> {
    for fd in 3..3u64 + u64::from(n) {
        let passed = i32::try_from(fd).is_ok_and(|fd| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)
                .is_ok_and(|flags| flags & libc::FD_CLOEXEC == 0)
        });
        if !passed {
            return Err(RuntimeError::Usage(format!(
                "--preserve-fds {n}: descriptor {fd} is not open"
            )));
        }
    }
    Ok(())
}

/// Logs `warnings` (a hook that failed where the spec says to go on); exit status 0.
fn warn(log: &Log, warnings: &[String]) -> i32 {
    for w in warnings {
        log.write("warning", &crate::printable::escape_controls(w));
    }
    0
}

fn dispatch(root: &Path, log: &Log, verb: Verb) -> Result<i32, RuntimeError> {
    match verb {
        Verb::Create(a) => {
            check_preserved_fds(a.preserve_fds)?;
            lifecycle::create(root, &a.id, &create_options(&a)).map(|_| 0)
        }
        Verb::Start { id } => lifecycle::start(root, &id).map(|w| warn(log, &w)),
        Verb::Run {
            create,
            detach,
            keep,
        } => run(root, log, &create, detach, keep),
        Verb::State { id } => {
            print_json(&lifecycle::document(root, &id)?);
            Ok(0)
        }
        Verb::Kill { all, id, signal } => {
            let signal = lifecycle::parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            lifecycle::kill(root, &id, signal, all).map(|()| 0)
        }
        Verb::Delete { force, id } => lifecycle::delete(root, &id, force).map(|w| warn(log, &w)),
        Verb::Exec(a) => exec(root, a),
        Verb::Ps { format, id } => ps(root, &id, &format),
        Verb::Pause { id } => lifecycle::set_paused(root, &id, true).map(|()| 0),
        Verb::Resume { id } => lifecycle::set_paused(root, &id, false).map(|()| 0),
        Verb::List { format, quiet } => list(root, &format, quiet),
        Verb::Update { resources, id } => {
            let r = read_resources(&resources)?;
            crate::oci_runtime::bundle::check_resources(&r, "resources")?;
            lifecycle::update(root, &id, &r).map(|()| 0)
        }
        Verb::Events {
            stats,
            interval,
            id,
        } => events(root, &id, stats, interval),
        Verb::Features => {
            print_json(&crate::oci_runtime::features::document());
            Ok(0)
        }
        Verb::Spec { bundle } => write_spec(&bundle).map(|()| 0),
        Verb::Checkpoint { .. } | Verb::Restore { .. } => Err(RuntimeError::Usage(
            "checkpoint and restore are not supported by capsa-runc".into(),
        )),
    }
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        vm: invoked_name().is_some_and(|n| n == VM_ARGV0),
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    say!("{text}");
}

/// `run`: create and start; without `--detach`, wait for the init (this process's child),
/// remove the container unless `--keep`, and exit with the init's status.
fn run(
    root: &Path,
    log: &Log,
    a: &CreateArgs,
    detach: bool,
    keep: bool,
) -> Result<i32, RuntimeError> {
    check_preserved_fds(a.preserve_fds)?;
    let pid = lifecycle::create(root, &a.id, &create_options(a))?;
    match lifecycle::start(root, &a.id) {
        Ok(warnings) => warn(log, &warnings),
        Err(e) => {
            let _ = lifecycle::delete(root, &a.id, true);
            return Err(e);
        }
    };
    if detach {
        return Ok(0);
    }
    use crate::linux::process::sigforward;
    sigforward::forward_to(pid, sigforward::USER_SIGNALS);
    let code = crate::container::monitor::wait_child(pid);
    sigforward::stop();
    if !keep {
        let warnings = lifecycle::delete(root, &a.id, true)?;
        warn(log, &warnings);
    }
    Ok(code)
}

fn exec(root: &Path, a: ExecArgs) -> Result<i32, RuntimeError> {
    check_preserved_fds(a.preserve_fds)?;
    let process = a
        .process
        .as_deref()
        .map(crate::oci_runtime::exec::process_file)
        .transpose()?;
    let flags = ProcessFlags {
        args: a.command,
        env: a.env,
        cwd: a.cwd,
        user: a.user,
        tty: a.tty,
    };
    let opts = ExecOptions {
        pid_file: a.pid_file,
        console_socket: a.console_socket,
        preserve_fds: a.preserve_fds,
    };
    let pid = crate::oci_runtime::exec::exec(root, &a.id, process, flags, &opts)?;
    if a.detach {
        return Ok(0);
    }
    use crate::linux::process::sigforward;
    sigforward::forward_to(pid, sigforward::USER_SIGNALS);
    let code = crate::container::monitor::wait_child(pid);
    sigforward::stop();
    Ok(code)
}

/// `events`: one stats line with `--stats`; else a stats line every `interval` (and an
/// `oom` line once an OOM kill is seen) until the container stops.
fn events(
    root: &Path,
    id: &str,
    once: bool,
    interval: std::time::Duration,
) -> Result<i32, RuntimeError> {
    use crate::oci_runtime::events::{observe, oom_event};
    let mut oom_reported = false;
    loop {
        let seen = observe(root, id)?;
        if seen.oom_killed && !oom_reported {
            oom_reported = true;
            if !say!("{}", oom_event(id)) {
                return Ok(0);
            }
        }
        if !say!("{}", seen.stats) || once || seen.stopped {
            return Ok(0);
        }
        std::thread::sleep(interval.max(std::time::Duration::from_millis(100)));
    }
}

fn ps(root: &Path, id: &str, format: &str) -> Result<i32, RuntimeError> {
    let pids = lifecycle::pids(root, id)?;
    match format {
        "json" => print_json(&pids),
        "table" => {
            say!("PID\tCMD");
            for pid in pids {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                say!(
                    "{pid}\t{}",
                    crate::printable::escape_controls(cmd.trim_end())
                );
            }
        }
        other => return Err(RuntimeError::Usage(format!("unknown --format {other:?}"))),
    }
    Ok(0)
}

fn list(root: &Path, format: &str, quiet: bool) -> Result<i32, RuntimeError> {
    let docs: Vec<state::StateDocument> = state::ids(root)
        .iter()
        .filter_map(|id| lifecycle::document(root, id).ok())
        .collect();
    if quiet {
        for d in &docs {
            say!("{}", d.id);
        }
        return Ok(0);
    }
    match format {
        "json" => print_json(&docs),
        "table" => {
            say!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
            for d in &docs {
                say!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    d.id,
                    d.pid,
                    d.status,
                    crate::printable::escape_controls(&d.bundle.display().to_string()),
                    d.created,
                    d.owner
                );
            }
        }
        other => return Err(RuntimeError::Usage(format!("unknown --format {other:?}"))),
    }
    Ok(0)
}

fn read_resources(path: &Path) -> Result<oci_spec::runtime::LinuxResources, RuntimeError> {
    let text = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(RuntimeError::io("stdin"))?;
        buf
    } else {
        std::fs::read(path).map_err(RuntimeError::io(path.display().to_string()))?
    };
    let de = &mut serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(de).map_err(|e| RuntimeError::Config {
        path: path.to_path_buf(),
        reason: format!("{}: {}", e.path(), e.inner()),
    })
}

/// `spec`: oci-spec's default config (runc's own starting point: `sh` on a terminal,
/// the usual namespaces, mounts, masked paths and capabilities), refused over an existing one.
fn write_spec(bundle: &Path) -> Result<(), RuntimeError> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(RuntimeError::Usage(format!(
            "{} exists already",
            path.display()
        )));
    }
    let spec = oci_spec::runtime::Spec::default();
    let text = serde_json::to_vec_pretty(&spec)
        .map_err(|e| RuntimeError::Setup(format!("config.json: {e}")))?;
    std::fs::write(&path, text).map_err(RuntimeError::io(path.display().to_string()))
}
