//! A container's recorded state (`state.json`) and what is true now: a record that says
//! "running" is checked against the live process, so `ps` never shows a dead container as
//! up, even after its monitor was killed.

use crate::linux::cgroups::CgroupPaths;
use serde::{Deserialize, Serialize};

/// The error recorded with [`LOST_EXIT_CODE`].
pub const LOST_ERROR: &str = "the container's monitor died; its exit status is lost";

/// Exit code reported when a container's exit status was lost (its monitor died), as
/// Docker reports 255 for a container whose shim vanished.
pub const LOST_EXIT_CODE: i32 = 255;
/// Why a VM container whose monitor vanished is shown as exited with 137.
pub const VM_KILLED: &str =
    "the VM was killed (SIGKILL to its monitor, which takes the VM with it)";

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being set up; the creating process owns it.
    Creating,
    /// Init is waiting on the start gate.
    Created,
    /// The workload runs.
    Running,
    /// The workload ended; only disk is used.
    Exited,
    /// Creation was interrupted; only `rm` applies.
    Dead,
}

impl Status {
    /// Docker's word for it (`docker inspect` .State.Status); see also [`State::status_word`].
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating | Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// 64-hex ID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID (config digest).
    pub image_id: String,
    /// Entrypoint + command, as run.
    pub command: Vec<String>,
    /// How it is isolated, chosen at create (`"container"` or `"vm"` on disk).
    pub isolation: super::sandbox::Isolation,
    /// Status as last recorded.
    pub status: Status,
    /// Creation time (RFC 3339).
    pub created: String,
    /// When the workload was started.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Host PID of the container's init.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Start time of that PID (field 22 of /proc/PID/stat), so a recycled PID is not mistaken
    /// for the container.
    #[serde(default)]
    pub pid_start_time: Option<u64>,
    /// The process that waits for the init and records its exit.
    #[serde(default)]
    pub monitor_pid: Option<i32>,
    /// Start time of the monitor's PID.
    #[serde(default)]
    pub monitor_start_time: Option<u64>,
    /// Exit code once exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// `--restart`.
    #[serde(default)]
    pub restart_policy: super::restart::RestartPolicy,
    /// How many times the policy restarted it.
    #[serde(default)]
    pub restart_count: u32,
    /// Waiting to be restarted by its policy.
    #[serde(default)]
    pub restarting: bool,
    /// Stopped with `stop`/`kill`/`rm -f` (a policy does not restart it then).
    #[serde(default)]
    pub stopped_by_user: bool,
    /// `--stop-signal`, else the image's `STOPSIGNAL` (None: SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<i32>,
    /// `--stop-timeout` in seconds (None: 10).
    #[serde(default)]
    pub stop_timeout: Option<u64>,
    /// Frozen by `pause`.
    #[serde(default)]
    pub paused: bool,
    /// The network it joined.
    #[serde(default)]
    pub network: crate::net::NetworkMode,
    /// Its place on its first bridge network (address, veth, published ports).
    #[serde(default)]
    pub endpoint: Option<crate::net::Endpoint>,
    /// Networks connected later (`network connect`), as eth1, eth2...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connected: Vec<crate::net::Endpoint>,
    /// The first network's endpoint while it is disconnected from a container that does
    /// not run (its address, MAC and host ports kept): a connect to that network gives it
    /// back as eth0. docker-compose disconnects and reconnects every network of a new
    /// container to set its aliases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached_endpoint: Option<crate::net::Endpoint>,
    /// Whether the kernel's OOM killer acted in the container's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
    /// The last error (exec failure, lost monitor).
    #[serde(default)]
    pub error: Option<String>,
    /// Absolute cgroup directories.
    pub cgroup: CgroupPaths,
    /// First host ID of the container's user-namespace range (`--userns=auto`).
    #[serde(default)]
    pub userns_base: Option<u32>,
    /// Log rotation (`--log-opt`).
    #[serde(default)]
    pub log_rotation: super::logfile::Rotation,
    /// `--log-driver`: json-file, local or none.
    #[serde(default)]
    pub log_driver: super::logfile::Driver,
    /// `--rm`: remove when it exits.
    #[serde(default)]
    pub auto_remove: bool,
    /// `-i` (the API's `OpenStdin`): clients attach to its input (`docker attach` sends
    /// its stdin only when inspect says so).
    #[serde(default)]
    pub open_stdin: bool,
    /// `StdinOnce`: the first client's end of input closes stdin (else only the
    /// workload's own exit does).
    #[serde(default)]
    pub stdin_once: bool,
    /// The host name capsa gave it (`--hostname`, else the short ID): the hosts files of
    /// its networks list it from here, never from the container-writable /etc/hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    /// `--add-host` entries, from which its /etc/hosts is rebuilt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// The volumes it mounts (named and anonymous), by name: none is removed while it is here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The container's own labels (`--label`), shown over its image's.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The healthcheck it runs (the image's under the user's), as `Config.Healthcheck`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<super::health::Healthcheck>,
    /// The results of its checks since it last started (`State.Health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::Health>,
    /// Never stored: set on the stand-in [`State::unreadable`] makes for a container whose
    /// state.json does not parse, with the reason. Such a container is shown as dead and
    /// can only be removed.
    #[serde(skip)]
    pub unreadable: Option<String>,
    /// Settings kept only to show them as they were given (`inspect`).
    #[serde(default)]
    pub asked: Asked,
}

/// Settings a container keeps only to show them as the client gave them: what the engine
/// applies is elsewhere (the OCI spec, the other fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Asked {
    /// `Config.Env` entries without `=` (the API's "unset"): shown, never applied.
    #[serde(default)]
    pub env_names: Vec<String>,
    /// `HostConfig.Isolation` as written (`""`, `default`, `vm`).
    #[serde(default)]
    pub isolation: String,
    /// `--init` / `HostConfig.Init`.
    #[serde(default)]
    pub init: bool,
    /// `--tmpfs` / `HostConfig.Tmpfs`: mount point and options.
    #[serde(default)]
    pub tmpfs: Vec<(String, String)>,
    /// `--log-opt` / `HostConfig.LogConfig.Config` as given (applied as `log_rotation`).
    #[serde(default)]
    pub log_config: std::collections::BTreeMap<String, String>,
    /// `--ulimit` / `HostConfig.Ulimits` (applied as the spec's rlimits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<super::tuning::Ulimit>,
    /// `--device` / `HostConfig.Devices` (applied as the spec's devices and cgroup rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<super::tuning::DeviceMapping>,
    /// `--device-cgroup-rule` / `HostConfig.DeviceCgroupRules` (applied as cgroup rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    /// `--volumes-from` / `HostConfig.VolumesFrom` as given (applied as mounts at create).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    /// How many leading words of `command` are the entrypoint (None in records from
    /// before it was kept): `commit` splits the Entrypoint from the Cmd with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint_len: Option<usize>,
    /// `--volume-driver` / `HostConfig.VolumeDriver` as given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub volume_driver: String,
}

/// Start time (clock ticks since boot) of a live process, or None if it does not exist.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None; // a zombie has finished
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is alive and still the process that had `start_time`.
pub fn is_same_process(pid: Option<i32>, start_time: Option<u64>) -> bool {
    match (pid, start_time) {
        (Some(pid), Some(t)) => process_start_time(pid) == Some(t),
        _ => false,
    }
}

/// The image's `STOPSIGNAL` as a number (an image naming no signal this host knows gets
/// SIGTERM, as one naming none).
fn image_stop_signal(image: &crate::image::Image) -> Option<i32> {
    let name = image.config.config().as_ref()?.stop_signal().clone()?;
    super::kill::parse_signal(&name).ok()
}

impl State {
    /// The record of a container being created from `opts` and `image` by this process
    /// (its monitor until one is forked); the caller fills in cgroups and user namespace.
    pub fn creating(
        id: &str,
        name: &str,
        opts: &super::options::RunOptions,
        image: &crate::image::Image,
        spec: &oci_spec::runtime::Spec,
        isolation: super::sandbox::Isolation,
        endpoint: Option<crate::net::Endpoint>,
    ) -> State {
        let me = std::process::id() as i32;
        State {
            id: id.to_string(),
            name: name.to_string(),
            image: opts.image.clone(),
            image_id: image.id.clone(),
            command: spec
                .process()
                .as_ref()
                .and_then(|p| p.args().clone())
                .unwrap_or_default(),
            isolation,
            status: Status::Creating,
            created: crate::timefmt::rfc3339(std::time::SystemTime::now()),
            started_at: None,
            finished_at: None,
            pid: None,
            pid_start_time: None,
            monitor_pid: Some(me),
            monitor_start_time: process_start_time(me),
            exit_code: None,
            restart_policy: opts.restart_policy,
            restart_count: 0,
            restarting: false,
            stopped_by_user: false,
            stop_signal: opts.stop_signal.or_else(|| image_stop_signal(image)),
            stop_timeout: opts.stop_timeout,
            paused: false,
            network: opts.network,
            endpoint,
            connected: Vec::new(),
            detached_endpoint: None,
            open_stdin: opts.interactive,
            stdin_once: opts.stdin_once,
            oom_killed: false,
            error: None,
            cgroup: Default::default(),
            userns_base: None,
            log_rotation: opts.log_rotation,
            log_driver: opts.log_driver,
            auto_remove: opts.auto_remove,
            hostname: spec.hostname().clone(),
            extra_hosts: opts.add_hosts.clone(),
            volumes: super::volumes::names(opts),
            labels: opts.labels.clone(),
            healthcheck: None,
            health: None,
            unreadable: None,
            asked: Asked {
                init: opts.init,
                volumes_from: opts.volumes_from.clone(),
                volume_driver: opts.volume_driver.clone().unwrap_or_default(),
                entrypoint_len: Some(super::spec::entrypoint_len(opts, image)),
                ..opts.asked.clone()
            },
        }
    }

    /// A stand-in for container `id` whose record cannot be read (`cause`): dead, with
    /// what could still be read of it (`remnant`), created when its folder was.
    pub fn unreadable(id: &str, cause: String, remnant: Remnant, created: String) -> State {
        State {
            id: id.to_string(),
            name: remnant.name.unwrap_or_default(),
            image: remnant.image.unwrap_or_default(),
            image_id: remnant.image_id.unwrap_or_default(),
            command: Vec::new(),
            isolation: remnant.isolation.unwrap_or_default(),
            status: Status::Dead,
            created,
            started_at: None,
            finished_at: None,
            pid: remnant.pid,
            pid_start_time: remnant.pid_start_time,
            monitor_pid: None,
            monitor_start_time: None,
            exit_code: None,
            restart_policy: Default::default(),
            restart_count: 0,
            restarting: false,
            stopped_by_user: false,
            stop_signal: None,
            stop_timeout: None,
            paused: false,
            network: Default::default(),
            endpoint: None,
            connected: Vec::new(),
            detached_endpoint: None,
            open_stdin: false,
            stdin_once: false,
            oom_killed: false,
            error: Some(format!("its record (state.json) is unreadable: {cause}")),
            cgroup: remnant.cgroup.unwrap_or_default(),
            userns_base: remnant.userns_base,
            log_rotation: Default::default(),
            log_driver: Default::default(),
            auto_remove: false,
            hostname: None,
            extra_hosts: Vec::new(),
            volumes: Vec::new(),
            labels: Default::default(),
            healthcheck: None,
            health: None,
            unreadable: Some(cause),
            asked: Asked::default(),
        }
    }

    /// Every network endpoint: the first network's, then the connected ones.
    pub fn endpoints(&self) -> impl Iterator<Item = &crate::net::Endpoint> {
        self.endpoint.iter().chain(self.connected.iter())
    }

    /// The state as it is now, correcting a record whose processes are gone.
    pub fn observed(&self) -> State {
        let mut s = self.clone();
        let init_alive = is_same_process(self.pid, self.pid_start_time);
        let monitor_alive = is_same_process(self.monitor_pid, self.monitor_start_time);
        match self.status {
            Status::Creating if !monitor_alive => s.status = Status::Dead,
            // A VM's monitor is the process `stop` and `kill` signal; only SIGKILL ends it
            // without its recording the exit, and its engine dies with it (PDEATHSIG).
            Status::Running if !self.isolation.workload_on_host() && !monitor_alive => {
                s.status = Status::Exited;
                s.exit_code = Some(137);
                s.error = Some(VM_KILLED.into());
            }
            // A created VM container has no process until `start` boots it.
            Status::Created if !self.isolation.workload_on_host() => {}
            Status::Created | Status::Running if !init_alive && !monitor_alive => {
                tracing::debug!(id = %self.id, pid = ?self.pid, monitor = ?self.monitor_pid, "init and monitor gone");
                s.status = Status::Exited;
                s.exit_code = Some(LOST_EXIT_CODE);
                s.error = Some(LOST_ERROR.into());
            }
            _ => {}
        }
        s
    }

    /// Clears what the last run left (its exit, error, pause, and the user's stop), for a
    /// stopped container that `start` runs again.
    pub fn forget_last_run(&mut self) {
        self.exit_code = None;
        self.finished_at = None;
        self.error = None;
        self.oom_killed = false;
        self.paused = false;
        self.stopped_by_user = false;
    }

    /// Docker's status word, which says `paused` for a frozen running container.
    pub fn status_word(&self) -> &'static str {
        if self.paused && self.status == Status::Running {
            "paused"
        } else if self.restarting && self.status == Status::Exited {
            "restarting"
        } else {
            self.status.as_str()
        }
    }

    /// Whether the workload (or its init) is alive now.
    pub fn init_alive(&self) -> bool {
        is_same_process(self.pid, self.pid_start_time)
    }

    /// `Up 5 seconds`, `Exited (0) 3 minutes ago`, `Created`, as `docker ps` prints it.
    pub fn status_line(&self) -> String {
        use crate::timefmt::{ago, human_duration, parse_rfc3339};
        match self.status {
            Status::Creating | Status::Created => "Created".into(),
            Status::Running => {
                let since = self.started_at.as_deref().and_then(parse_rfc3339);
                let up = since
                    .map(|t| human_duration(t.elapsed().unwrap_or_default()))
                    .unwrap_or_default();
                if self.paused {
                    format!("Up {up} (Paused)")
                } else {
                    let health = super::health::status_suffix(self.health.as_ref());
                    format!("Up {up}{health}")
                }
            }
            Status::Exited => {
                let when = self
                    .finished_at
                    .as_deref()
                    .and_then(parse_rfc3339)
                    .map(|t| format!(" {} ago", ago(t)))
                    .unwrap_or_default();
                let word = if self.restarting {
                    "Restarting"
                } else {
                    "Exited"
                };
                format!(
                    "{word} ({}){when}",
                    self.exit_code.unwrap_or(LOST_EXIT_CODE)
                )
            }
            Status::Dead if self.unreadable.is_some() => "Dead (record unreadable)".into(),
            Status::Dead => "Dead".into(),
        }
    }
}

/// What can still be read of a record that does not parse as a whole (one written by
/// another capsa version, say), each field on its own; an empty or torn file gives
/// nothing. Enough to find what `rm -f` must take back.
#[derive(Debug, Clone, Default)]
pub struct Remnant {
    /// The container's name.
    pub name: Option<String>,
    /// The image as the user named it.
    pub image: Option<String>,
    /// The image ID (so that `image prune` still counts the image as used).
    pub image_id: Option<String>,
    /// How it was isolated.
    pub isolation: Option<super::sandbox::Isolation>,
    /// Host PID of its init, and that PID's start time.
    pub pid: Option<i32>,
    /// Start time of `pid`.
    pub pid_start_time: Option<u64>,
    /// Its cgroup directories.
    pub cgroup: Option<CgroupPaths>,
    /// First host ID of its user-namespace range.
    pub userns_base: Option<u32>,
}

impl Remnant {
    /// Reads each field of `data` that parses on its own.
    pub fn parse(data: &[u8]) -> Remnant {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(data) else {
            return Remnant::default();
        };
        fn field<T: serde::de::DeserializeOwned>(
            fields: &serde_json::Map<String, serde_json::Value>,
            key: &str,
        ) -> Option<T> {
            serde_json::from_value(fields.get(key)?.clone()).ok()
        }
        Remnant {
            name: field(&fields, "name"),
            image: field(&fields, "image"),
            image_id: field(&fields, "image_id"),
            isolation: field(&fields, "isolation"),
            pid: field(&fields, "pid"),
            pid_start_time: field(&fields, "pid_start_time"),
            cgroup: field(&fields, "cgroup"),
            userns_base: field(&fields, "userns_base"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remnant_keeps_the_fields_that_parse_on_their_own() {
        let r = Remnant::parse(br#"{"name":"web","status":"sideways","pid":7,"userns_base":"x"}"#);
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.pid, Some(7));
        assert_eq!(r.userns_base, None);
        assert!(Remnant::parse(b"").name.is_none());
        assert!(Remnant::parse(br#"{"name":"we"#).name.is_none());
    }

    #[test]
    fn own_process_is_recognised_and_recycled_pids_are_not() {
        let me = std::process::id() as i32;
        let t = process_start_time(me);
        assert!(t.is_some());
        assert!(is_same_process(Some(me), t));
        assert!(!is_same_process(Some(me), t.map(|t| t + 1)));
        assert!(!is_same_process(None, None));
    }
}
