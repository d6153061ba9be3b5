//! Healthchecks, as Docker runs them: the check configured by the image (`HEALTHCHECK`),
//! overridden by `--health-*` flags or the API's `Config.Healthcheck` ([`Healthcheck`],
//! [`merge`]), run by a prober of its own per container that has one ([`watch`]).
//!
//! The prober is a small process forked when the container starts (as the monitors are,
//! detached from the caller, its command line `capsa health <short id>`): it waits on a
//! pidfd of the container's init with the interval as the timeout (so it wakes only to
//! check, and at once when the container ends), runs the check as an `exec` in the
//! container bounded by its timeout, and records the result in the container's state
//! under its lock. It exits when the init is gone, or the record names another init
//! (a restart forks a new prober) or none. A container without a check has no prober and
//! costs nothing; no monitor loop is woken for it.

use super::exec::{ExecOptions, Started};
use super::state::State;
use super::store::ContainerStore;
use super::ContainerError;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

/// Docker's default interval between checks and timeout of one check.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Docker's default timeout of one check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive failures that make a container unhealthy by default.
pub const DEFAULT_RETRIES: i64 = 3;
/// The results kept in `State.Health.Log`.
pub const LOG_ENTRIES: usize = 5;
/// The bytes of a check's output kept, as Docker keeps them.
pub const OUTPUT_LIMIT: usize = 4096;
/// The shortest interval or timeout Docker accepts (zero means the default).
const MIN_DURATION_NS: i64 = 1_000_000;

/// A healthcheck as the image config and the API write it: durations in nanoseconds, zero
/// meaning "inherit" (from the image) and then "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `[]` (inherit), `["NONE"]`, `["CMD", arg...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Of one check.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// After the start, failures do not count for this long.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Between checks during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Consecutive failures that make it unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Healthcheck {
    /// The check that turns the image's off (`--no-healthcheck`, `Test: ["NONE"]`).
    pub fn none() -> Healthcheck {
        Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        }
    }

    /// Refuses what Docker refuses: an unknown test form, a negative or sub-millisecond
    /// duration, negative retries.
    pub fn validate(&self) -> Result<(), ContainerError> {
        let bad = |m: String| Err(ContainerError::InvalidArgument(m));
        match self.test.first().map(String::as_str) {
            None | Some("NONE") => {}
            Some("CMD") if self.test.len() > 1 => {}
            Some("CMD-SHELL") if self.test.len() == 2 => {}
            Some("CMD") | Some("CMD-SHELL") => {
                return bad(format!("Healthcheck.Test {:?}: no command", self.test));
            }
            Some(other) => {
                return bad(format!(
                    "Healthcheck.Test: unknown type {other:?} (expected NONE, CMD or CMD-SHELL)"
                ));
            }
        }
        for (name, ns) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if ns < 0 {
                return bad(format!("{name} in Healthcheck cannot be negative"));
            }
            if ns != 0 && ns < MIN_DURATION_NS {
                return bad(format!("{name} in Healthcheck cannot be less than 1ms"));
            }
        }
        if self.retries < 0 {
            return bad("Retries in Healthcheck cannot be negative".into());
        }
        Ok(())
    }

    /// The command to run, None when there is no check (`NONE`, no test, or a malformed one).
    pub fn command(&self) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((kind, args)) if kind == "CMD" && !args.is_empty() => Some(args.to_vec()),
            Some((kind, [line])) if kind == "CMD-SHELL" => {
                Some(vec!["/bin/sh".into(), "-c".into(), line.clone()])
            }
            _ => None,
        }
    }

    /// The durations and retries to run it with, defaults filled in and values an image
    /// may carry that Docker refuses (negative, sub-millisecond) taken as unset.
    pub(crate) fn schedule(&self) -> Schedule {
        let pick = |ns: i64, default: Duration| {
            if ns >= MIN_DURATION_NS {
                Duration::from_nanos(ns as u64)
            } else {
                default
            }
        };
        Schedule {
            interval: pick(self.interval, DEFAULT_INTERVAL),
            timeout: pick(self.timeout, DEFAULT_TIMEOUT),
            start_period: pick(self.start_period, Duration::ZERO),
            start_interval: pick(self.start_interval, pick(self.interval, DEFAULT_INTERVAL)),
            retries: if self.retries > 0 {
                self.retries
            } else {
                DEFAULT_RETRIES
            },
        }
    }
}

/// The container's check: the user's fields over the image's (an empty test or a zero
/// field inherits), as Docker merges them.
pub fn merge(user: Option<&Healthcheck>, image: Option<&Healthcheck>) -> Option<Healthcheck> {
    let Some(user) = user else {
        return image.cloned();
    };
    let mut merged = user.clone();
    if let Some(image) = image {
        let inherit = |mine: &mut i64, theirs: i64| {
            if *mine == 0 {
                *mine = theirs;
            }
        };
        if merged.test.is_empty() {
            merged.test = image.test.clone();
        }
        inherit(&mut merged.interval, image.interval);
        inherit(&mut merged.timeout, image.timeout);
        inherit(&mut merged.start_period, image.start_period);
        inherit(&mut merged.start_interval, image.start_interval);
        inherit(&mut merged.retries, image.retries);
    }
    Some(merged)
}

/// The `Healthcheck` of the image's config blob (the OCI config type has no such field),
/// None when it has none or it does not parse.
pub fn of_image(root: &crate::root::StateRoot, image: &crate::image::Image) -> Option<Healthcheck> {
    let digest = crate::image::digest::Digest::parse(&image.id).ok()?;
    let blob = crate::image::store::ImageStore::new(root)
        .read_blob(&digest)
        .ok()?;
    let config: serde_json::Value = serde_json::from_slice(&blob).ok()?;
    serde_json::from_value(config.get("config")?.get("Healthcheck")?.clone()).ok()
}

/// The check a Dockerfile's `HEALTHCHECK` argument gives (`NONE`, or options such as
/// `--interval=5s` then `CMD` in exec or shell form), as `import -c` and `commit -c` take
/// it; None when it does not parse or Docker would refuse it.
pub fn parse_instruction(arg: &str) -> Option<Healthcheck> {
    let arg = arg.trim();
    if arg.eq_ignore_ascii_case("NONE") {
        return Some(Healthcheck::none());
    }
    let mut check = Healthcheck::default();
    let mut rest = arg;
    while let Some(option) = rest.strip_prefix("--") {
        let (word, after) = option.split_once(char::is_whitespace)?;
        let (key, value) = word.split_once('=')?;
        let ns = || -> Option<i64> {
            let d = humantime::parse_duration(value).ok()?;
            i64::try_from(d.as_nanos()).ok()
        };
        match key {
            "interval" => check.interval = ns()?,
            "timeout" => check.timeout = ns()?,
            "start-period" => check.start_period = ns()?,
            "start-interval" => check.start_interval = ns()?,
            "retries" => check.retries = value.parse().ok()?,
            _ => return None,
        }
        rest = after.trim_start();
    }
    let (verb, command) = rest.split_once(char::is_whitespace)?;
    if !verb.eq_ignore_ascii_case("CMD") {
        return None;
    }
    let command = command.trim();
    check.test = match serde_json::from_str::<Vec<String>>(command) {
        Ok(args) => std::iter::once("CMD".to_string()).chain(args).collect(),
        Err(_) => vec!["CMD-SHELL".into(), command.to_string()],
    };
    check.validate().ok()?;
    Some(check)
}

/// Refuses a check of the user's that Docker refuses ([`Healthcheck::validate`]).
pub fn check(user: Option<&Healthcheck>) -> Result<(), ContainerError> {
    match user {
        Some(user) => user.validate(),
        None => Ok(()),
    }
}

/// The check a new container of `image` gets from `user` (flags or API) over the image's.
pub fn configured(
    root: &crate::root::StateRoot,
    image: &crate::image::Image,
    user: Option<&Healthcheck>,
) -> Result<Option<Healthcheck>, ContainerError> {
    check(user)?;
    Ok(merge(user, of_image(root, image).as_ref()))
}

/// Durations and retries of a check, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Schedule {
    interval: Duration,
    timeout: Duration,
    start_period: Duration,
    start_interval: Duration,
    retries: i64,
}

/// `State.Health.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No check has passed yet.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl HealthStatus {
    /// Docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One check's result, as `State.Health.Log` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    /// When it started (RFC 3339).
    pub start: String,
    /// When it ended.
    pub end: String,
    /// Its exit code; -1 when it could not run or exceeded its timeout.
    pub exit_code: i64,
    /// The first [`OUTPUT_LIMIT`] bytes of its output (stdout and stderr together).
    pub output: String,
}

/// `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// starting, healthy or unhealthy.
    pub status: HealthStatus,
    /// Failures in a row that counted.
    pub failing_streak: u32,
    /// The last [`LOG_ENTRIES`] results, oldest first.
    #[serde(default)]
    pub log: Vec<Probe>,
}

impl Health {
    /// A container that has just started.
    pub fn starting() -> Health {
        Health {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// Takes a check's result: a pass makes it healthy; a failure counts unless it comes
    /// while starting within the start period (`in_start_period`), and `retries` counted
    /// failures in a row make it unhealthy.
    fn record(&mut self, probe: Probe, retries: i64, in_start_period: bool) {
        if probe.exit_code == 0 {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !(self.status == HealthStatus::Starting && in_start_period) {
            self.failing_streak = self.failing_streak.saturating_add(1);
            if i64::from(self.failing_streak) >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(probe);
        let excess = self.log.len().saturating_sub(LOG_ENTRIES);
        self.log.drain(..excess);
    }
}

/// What `ps` adds to `Up 5 seconds`: ` (healthy)`, ` (health: starting)`, ` (unhealthy)`.
pub fn status_suffix(health: Option<&Health>) -> &'static str {
    match health.map(|h| h.status) {
        Some(HealthStatus::Starting) => " (health: starting)",
        Some(HealthStatus::Healthy) => " (healthy)",
        Some(HealthStatus::Unhealthy) => " (unhealthy)",
        None => "",
    }
}

/// Forks the prober of container `state` (just started, on this host) if it has a check.
/// The caller must be single-threaded (as for the monitors). A prober that cannot be
/// forked leaves the container running with its health `starting`.
pub fn watch(store: &ContainerStore, state: &State) {
    if let (Some(pid), Some(start_time)) = (state.pid, state.pid_start_time) {
        spawn_prober(store, state, Init { pid, start_time }, Target::Host);
    }
}

/// Forks the prober of VM container `state` if it has a check: called by the process that
/// runs the VM (its detached monitor, or the CLI of a foreground run) before it boots it,
/// while it is single-threaded. The prober lives as long as that process and checks while
/// the record shows the VM running under it (through the restarts it boots), each check an
/// exec through the VM's control socket ([`crate::vm::probe`]).
pub fn watch_vm(store: &ContainerStore, state: &State) {
    let me = std::process::id() as i32;
    if let Some(start_time) = super::state::process_start_time(me) {
        spawn_prober(
            store,
            state,
            Init {
                pid: me,
                start_time,
            },
            Target::Vm,
        );
    }
}

/// Where a container's checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// As an exec on this host, for as long as `init` is the container's init.
    Host,
    /// As an exec in the VM `init` (its monitor) runs, whenever it runs it.
    Vm,
}

fn spawn_prober(store: &ContainerStore, state: &State, init: Init, target: Target) {
    let Some(check) = state.healthcheck.as_ref() else {
        return;
    };
    let Some(command) = check.command() else {
        return;
    };
    let schedule = check.schedule();
    let id = state.id.clone();
    let cgroup = state.cgroup.clone();
    let dir = store.dir(&id).dir;
    let forked = super::monitor::fork_monitor(&dir, |report| {
        let _ = crate::linux::sys::replace_cmdline(&["capsa", "health", super::id::short(&id)]);
        let _ = nix::unistd::write(&report, b"ok\n");
        drop(report);
        close_inherited();
        default_signals();
        join_monitor_cgroup(&cgroup);
        probe_loop(store, &id, &init, &command, &schedule, target);
        // SAFETY: ends the forked prober without running the caller's exit handlers.
        unsafe { libc::_exit(0) }
    });
    match forked {
        Ok(answer) if answer == "ok" => {}
        Ok(answer) => tracing::debug!(id = %state.id, answer, "no prober"),
        Err(e) => tracing::debug!(id = %state.id, error = %e, "no prober"),
    }
}

/// Closes every descriptor above stderr: the prober holds nothing of its caller's (a
/// foreground run's pipes to the workload would otherwise stay open for its life).
fn close_inherited() {
    // SAFETY: close_range takes integers; nothing in this new process uses those descriptors.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Joins the container's monitor cgroup where it has one (a detached container's): the
/// prober is then bounded by the container's CPU quota as its monitor is, and `rm -f`
/// takes it with that cgroup. A foreground run has none; its prober stays where it was
/// forked and ends with the init.
fn join_monitor_cgroup(cgroup: &crate::linux::cgroups::CgroupPaths) {
    let sibling =
        crate::linux::cgroups::sibling::paths(cgroup, super::monitor::MONITOR_CGROUP_SUFFIX);
    let me = std::process::id().to_string();
    for dir in sibling.dirs.values().filter(|d| d.is_dir()) {
        let _ = std::fs::write(dir.join("cgroup.procs"), &me);
    }
}

/// Signals a foreground run forwards to the workload get their default action here.
fn default_signals() {
    for &sig in crate::linux::process::sigforward::USER_SIGNALS {
        // SAFETY: resets a signal's disposition; no handler of ours runs after this.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// The init the prober watches (for a VM: its monitor, which the record names as its pid
/// while the VM runs).
struct Init {
    pid: i32,
    start_time: u64,
}

/// Checks every interval until the init is gone or the record names another (on the host);
/// for a VM, until its monitor is gone, skipping the times it is not running the VM (booting,
/// restarting), the start period counted from each boot.
fn probe_loop(
    store: &ContainerStore,
    id: &str,
    init: &Init,
    command: &[String],
    schedule: &Schedule,
    target: Target,
) {
    let Ok(exited) = crate::linux::sys::pidfd_open(init.pid) else {
        return;
    };
    if !super::state::is_same_process(Some(init.pid), Some(init.start_time)) {
        return;
    }
    let mut started = Instant::now();
    let mut run = None;
    loop {
        let in_start_period = started.elapsed() < schedule.start_period;
        let wait = if in_start_period {
            schedule.start_interval
        } else {
            schedule.interval
        };
        if readable(&exited, Some(wait)) {
            return;
        }
        let Ok(state) = store.load(id) else { return };
        if state.pid != Some(init.pid) || state.pid_start_time != Some(init.start_time) {
            match target {
                Target::Host => return,
                Target::Vm => continue,
            }
        }
        if target == Target::Vm && run != state.started_at {
            run = state.started_at.clone();
            started = Instant::now();
        }
        if state.paused {
            continue; // Docker does not check a paused container
        }
        let in_start_period = started.elapsed() < schedule.start_period;
        let probe = match target {
            Target::Host => run_check(store, id, command, schedule.timeout),
            Target::Vm => crate::vm::probe::run_check(store, id, command, schedule.timeout),
        };
        if !record(store, id, init, probe, schedule.retries, in_start_period)
            && target == Target::Host
        {
            return;
        }
    }
}

/// Records `probe` in the container's state; false when the container is gone or runs
/// another init. A change of status is an event (`health_status: healthy`).
fn record(
    store: &ContainerStore,
    id: &str,
    init: &Init,
    probe: Probe,
    retries: i64,
    in_start_period: bool,
) -> bool {
    let mut changed = None;
    let updated = store.update(id, |s| {
        if s.pid != Some(init.pid) || s.pid_start_time != Some(init.start_time) {
            return;
        }
        let health = s.health.get_or_insert_with(Health::starting);
        let before = health.status;
        health.record(probe, retries, in_start_period);
        if health.status != before {
            changed = Some(health.status);
        }
    });
    match updated {
        Ok(Some(state)) if state.pid == Some(init.pid) => {
            if let Some(status) = changed {
                let action = format!("health_status: {}", status.as_str());
                crate::events::container(store.root(), &action, &state, &[]);
            }
            true
        }
        _ => false,
    }
}

/// Runs `command` in container `id` as an exec, bounded by `timeout`.
fn run_check(store: &ContainerStore, id: &str, command: &[String], timeout: Duration) -> Probe {
    let start = SystemTime::now();
    let opts = ExecOptions {
        command: command.to_vec(),
        merged_output: true,
        ..Default::default()
    };
    let (exit_code, output) = match super::exec::exec_start(store, id, &opts) {
        Ok(started) => collect(started, timeout),
        Err(e) => (-1, e.to_string()),
    };
    Probe {
        start: crate::timefmt::rfc3339(start),
        end: crate::timefmt::rfc3339(SystemTime::now()),
        exit_code,
        output,
    }
}

/// Reads the check's output until its capsa-init exits; past `timeout`, kills it and says
/// so as Docker does (exit -1).
fn collect(started: Started, timeout: Duration) -> (i64, String) {
    let pid = started.pid;
    let deadline = Instant::now() + timeout;
    let mut output = started.pipes.and_then(|p| p.stdout);
    if let Some(fd) = &output {
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let exited = crate::linux::sys::pidfd_open(pid).ok();
    let mut kept = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_check(pid);
            let _ = super::monitor::wait_child(pid);
            let message = format!("Health check exceeded timeout ({})", go_duration(timeout));
            return (-1, message);
        }
        let mut fds = Vec::new();
        fds.extend(exited.iter().map(pollin));
        fds.extend(output.iter().map(pollin));
        if fds.is_empty() {
            break;
        }
        poll(&mut fds, Some(left));
        if let Some(fd) = &output {
            if !drain(fd, &mut kept) {
                output = None;
            }
        }
        if exited.is_some() && fds[0].revents != 0 {
            break;
        }
    }
    let code = super::monitor::wait_child(pid);
    (i64::from(code), String::from_utf8_lossy(&kept).into_owned())
}

/// Reads what `fd` holds, keeping up to [`OUTPUT_LIMIT`] bytes in `kept`; false at its end.
fn drain(fd: &OwnedFd, kept: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(_) => return false,
        }
    }
}

/// Kills a check past its timeout: the command's process group (capsa-init starts it as
/// its leader), so that capsa-init reaps it and exits (no zombie is left to a workload
/// that does not reap); capsa-init itself if it has not within a second.
///
/// capsa-init is stopped meanwhile: a command that exits between the reading of its PID
/// and the kill then stays a zombie, so its PID, and with it the group's number, cannot
/// pass to a host process that the kill would reach.
fn kill_check(pid: i32) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
    {
        // SAFETY: kill(2) with integers: the group our stopped capsa-init child started,
        // whose leader it has not reaped.
        unsafe { libc::kill(-child, libc::SIGKILL) };
    }
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let exited = crate::linux::sys::pidfd_open(pid).ok();
    if !exited.is_some_and(|fd| readable(&fd, Some(Duration::from_secs(1)))) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// A duration as Go prints it (`30s`, `500ms`, `1m30s`), as Docker's timeout message has it.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let fraction = format!("{:03}", s % 1000);
    let fraction = fraction.trim_end_matches('0');
    let secs = match fraction {
        "" => format!("{}s", s / 1000),
        f => format!("{}.{f}s", s / 1000),
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

fn pollin(fd: &OwnedFd) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// poll(2) over `fds` for up to `timeout` (None: no limit).
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) {
    let ms = timeout.map_or(-1, |t| {
        i32::try_from(t.as_millis().max(1)).unwrap_or(i32::MAX)
    });
    // SAFETY: `fds` is a live array of pollfd of the length given.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

/// Whether `fd` became readable within `timeout` (a pidfd: its process exited).
fn readable(fd: &OwnedFd, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut fds = [pollin(fd)];
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return false;
        }
        poll(&mut fds, left);
        if fds[0].revents != 0 {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(code: i64) -> Probe {
        Probe {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: code.to_string(),
        }
    }

    #[test]
    fn failures_count_after_the_start_period_and_a_pass_resets_them() {
        let mut h = Health::starting();
        h.record(probe(1), 2, true);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        h.record(probe(1), 2, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 1));
        h.record(probe(1), 2, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 2));
        h.record(probe(0), 2, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        for _ in 0..10 {
            h.record(probe(7), 2, true);
        }
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(h.log.len(), LOG_ENTRIES);
    }

    #[test]
    fn the_users_fields_override_the_images_and_zero_inherits() {
        let image = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: 5_000_000_000,
            retries: 7,
            ..Default::default()
        };
        let user = Healthcheck {
            interval: 1_000_000_000,
            ..Default::default()
        };
        let m = merge(Some(&user), Some(&image)).unwrap();
        assert_eq!(m.test, image.test);
        assert_eq!((m.interval, m.retries), (1_000_000_000, 7));
        let off = merge(Some(&Healthcheck::none()), Some(&image)).unwrap();
        assert_eq!(off.command(), None);
        assert_eq!(merge(None, Some(&image)), Some(image));
    }

    #[test]
    fn bad_durations_and_forms_are_refused() {
        let with = |f: fn(&mut Healthcheck)| {
            let mut h = Healthcheck {
                test: vec!["CMD-SHELL".into(), "true".into()],
                ..Default::default()
            };
            f(&mut h);
            h.validate()
        };
        assert!(with(|_| {}).is_ok());
        assert!(with(|h| h.interval = -1).is_err());
        assert!(with(|h| h.timeout = 999_999).is_err());
        assert!(with(|h| h.retries = -1).is_err());
        assert!(with(|h| h.test = vec!["SHELL".into(), "x".into()]).is_err());
        assert!(with(|h| h.test = vec!["CMD".into()]).is_err());
        let s = Healthcheck {
            test: vec!["CMD".into(), "x".into()],
            interval: -5,
            timeout: 500,
            ..Default::default()
        }
        .schedule();
        assert_eq!(
            (s.interval, s.timeout, s.retries),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 3)
        );
    }

    #[test]
    fn healthcheck_instructions_parse_as_a_dockerfile_writes_them() {
        let c = parse_instruction("--interval=1s --retries=2 CMD [\"true\"]").unwrap();
        assert_eq!(c.test, ["CMD", "true"]);
        assert_eq!((c.interval, c.retries), (1_000_000_000, 2));
        let c = parse_instruction("CMD test -e /ok").unwrap();
        assert_eq!(c.test, ["CMD-SHELL", "test -e /ok"]);
        assert_eq!(parse_instruction("none"), Some(Healthcheck::none()));
        assert_eq!(parse_instruction("--interval=-1s CMD true"), None);
        assert_eq!(parse_instruction("--colour=red CMD true"), None);
        assert_eq!(parse_instruction("RUN true"), None);
    }

    #[test]
    fn timeouts_read_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    }
}
