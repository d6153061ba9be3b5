//! `run` and `create`.

use super::{report, EXIT_ENGINE_ERROR};
use crate::api::{self, Notice};
use crate::container::health::{self, Healthcheck};
use crate::container::options::{self, RunOptions, SeccompChoice};
use crate::container::sandbox::{Isolation, TerminalRun};
use crate::container::tuning::{self, Tuning};
use crate::container::{ContainerError, ContainerStore};
use crate::image::ImageStore;
use crate::linux::process::exec_fifo::ExecOutcome;
use crate::root::StateRoot;
use clap::Args;

/// Flags of `run` and `create`, as Docker names them.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Print help (-h is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Assign a name to the container.
    #[arg(long)]
    name: Option<String>,
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keys that detach from the terminal (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Keep STDIN open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Connect to a network: bridge (default), none, host.
    #[arg(long = "network", visible_alias = "net", default_value = "bridge")]
    network: String,
    /// An IPv4 address on the network (instead of the next free one).
    #[arg(long)]
    ip: Option<String>,
    /// The MAC address of eth0.
    #[arg(long = "mac-address")]
    mac_address: Option<String>,
    /// Another name for the container on its user-defined network.
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// A link-local address (169.254.0.0/16) for eth0 besides its own.
    #[arg(long = "link-local-ip")]
    link_local_ip: Vec<String>,
    /// Publish a container port: [IP:][HOST:]CONTAINER[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every port the image exposes, each on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Expose a container port beyond the image's: PORT[/tcp|udp] (published by -P).
    #[arg(long)]
    expose: Vec<String>,
    /// A DNS server for the container's resolv.conf (replaces the host's).
    #[arg(long)]
    dns: Vec<String>,
    /// An /etc/hosts line: NAME:IP.
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Run a small init as PID 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Pull the image: missing (when not in the store), always, never.
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pull: String,
    /// Platform to pull when pulling: os/arch[/variant].
    #[arg(long)]
    platform: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Set environment variables (K=V, or K to pass the caller's value).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    env_file: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User as UID[:GID] or NAME[:GROUP].
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Container host name.
    #[arg(long = "hostname", short = 'h')]
    hostname: Option<String>,
    /// Memory limit (b, k, m, g).
    #[arg(short = 'm', long = "memory", allow_hyphen_values = true)]
    memory: Option<String>,
    /// Number of CPUs (CFS quota).
    #[arg(long = "cpus", allow_hyphen_values = true)]
    cpus: Option<String>,
    /// Process limit (-1 for unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<String>,
    /// Relative CPU weight against other containers (cgroup cpu.shares; default 1024).
    #[arg(
        short = 'c',
        long = "cpu-shares",
        value_name = "SHARES",
        allow_hyphen_values = true
    )]
    cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1).
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    cpuset_cpus: Option<String>,
    /// Memory nodes in which to allow execution (0-3, 0,1).
    #[arg(long = "cpuset-mems", value_name = "LIST")]
    cpuset_mems: Option<String>,
    /// Memory plus swap limit (with -m): a size, or -1 for unlimited swap.
    #[arg(long = "memory-swap", value_name = "BYTES", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Memory soft limit.
    #[arg(
        long = "memory-reservation",
        value_name = "BYTES",
        allow_hyphen_values = true
    )]
    memory_reservation: Option<String>,
    /// Tune container memory swappiness (0 to 100; -1: the host's) (cgroup v1).
    #[arg(
        long = "memory-swappiness",
        value_name = "INT",
        allow_hyphen_values = true
    )]
    memory_swappiness: Option<i64>,
    /// Disable the OOM killer for the container (cgroup v1).
    #[arg(long = "oom-kill-disable")]
    oom_kill_disable: bool,
    /// Block I/O relative weight, 10 to 1000 (0 for the default).
    #[arg(
        long = "blkio-weight",
        value_name = "WEIGHT",
        allow_hyphen_values = true
    )]
    blkio_weight: Option<i64>,
    /// Additional groups to join (names from the container's /etc/group, or IDs).
    #[arg(long = "group-add", value_name = "GROUP")]
    group_add: Vec<String>,
    /// Ulimit: NAME=SOFT[:HARD] (nofile, nproc, core, stack, memlock, ...).
    #[arg(long)]
    ulimit: Vec<String>,
    /// Size of /dev/shm (default 64m).
    #[arg(long = "shm-size", value_name = "BYTES")]
    shm_size: Option<String>,
    /// A namespaced kernel parameter: KEY=VALUE (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*).
    #[arg(long, value_name = "KEY=VALUE")]
    sysctl: Vec<String>,
    /// Add a host device to the container: HOST[:CONTAINER][:PERMISSIONS] (r, w, m).
    #[arg(long)]
    device: Vec<String>,
    /// Add a rule to the cgroup allowed devices list: 'TYPE MAJOR:MINOR ACCESS'.
    #[arg(long = "device-cgroup-rule")]
    device_cgroup_rule: Vec<String>,
    /// Mount the root file system read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Bind mount a volume or host directory: [NAME|/HOST:]CONTAINER[:OPTIONS]: ro, rw, suid, dev, noexec, nocopy (default rw, nosuid, nodev).
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Mount volumes from the specified container(s): CONTAINER[:ro|:rw].
    #[arg(long = "volumes-from")]
    volumes_from: Vec<String>,
    /// Optional volume driver for the container (capsa has only `local`; another name is
    /// recorded, and a volume the container would make is refused).
    #[arg(long = "volume-driver")]
    volume_driver: Option<String>,
    /// Attach a filesystem mount to the container: type=bind|volume|tmpfs,source=,target=[,readonly].
    #[arg(long = "mount")]
    mount: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS].
    #[arg(long = "tmpfs")]
    tmpfs: Vec<String>,
    /// Add a Linux capability.
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a Linux capability.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined|FILE.json, no-new-privileges=true|false,
    /// systempaths=unconfined.
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Give the container every capability and device, no seccomp, no masked paths.
    #[arg(long)]
    privileged: bool,
    /// Tune the workload's OOM preference (-1000 to 1000).
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    oom_score_adj: Option<String>,
    /// Parent cgroup (absolute, or relative to capsa's own cgroup).
    #[arg(long = "cgroup-parent")]
    cgroup_parent: Option<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped (with -d).
    #[arg(long, default_value = "no")]
    restart: String,
    /// Signal to stop the container with (default SIGTERM).
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Seconds `stop` waits before killing (default 10).
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<u64>,
    /// Command to run to check health.
    #[arg(long = "health-cmd", value_name = "CMD")]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s).
    #[arg(
        long = "health-interval",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s).
    #[arg(
        long = "health-timeout",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long = "health-retries", value_name = "N", allow_hyphen_values = true)]
    health_retries: Option<i64>,
    /// Time before failures count (ms|s|m|h) (default 0s).
    #[arg(
        long = "health-start-period",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    health_start_period: Option<String>,
    /// Time between checks in the start period (ms|s|m|h).
    #[arg(
        long = "health-start-interval",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// Logging driver: json-file, local (rotated at 20m into 5 files by default) or none
    /// (nothing kept; output reaches only attached clients).
    #[arg(long = "log-driver", default_value = "json-file")]
    log_driver: String,
    /// Log driver options: max-size=SIZE, max-file=N.
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// Override the image's ENTRYPOINT.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Isolation: container (namespaces and cgroups on this kernel) or vm (a microVM with a guest agent).
    #[arg(long, default_value = "container")]
    isolation: String,
    /// With --isolation vm: the hypervisor engine, capsa (capsa-vmm) or qemu; chosen for the host when absent.
    #[arg(long)]
    vmm: Option<String>,
    /// Set a label on the container (KEY=VALUE, or KEY for an empty value).
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// User namespace: auto (a private range of 65536 host IDs) or host.
    #[arg(long)]
    userns: Option<String>,
    /// UTS namespace: host shares the host's hostname (the default is the container's own).
    #[arg(long)]
    uts: Option<String>,
    /// PID namespace: host shares the host's processes (the default is the container's own).
    #[arg(long)]
    pid: Option<String>,
    /// The image to run.
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

impl RunArgs {
    fn into_options(self, create_only: bool) -> Result<RunOptions, ContainerError> {
        let bad = |m: &str| Err(ContainerError::InvalidArgument(m.to_string()));
        let isolation = match self.isolation.as_str() {
            "container" => Isolation::Container,
            "vm" => Isolation::Vm,
            other => return bad(&format!("--isolation {other:?}: expected container or vm")),
        };
        if self.vmm.is_some() && isolation != Isolation::Vm {
            return bad("--vmm applies only with --isolation vm");
        }
        let userns = match self.userns.as_deref() {
            None | Some("") | Some("host") => false,
            Some("auto") => true,
            Some(other) => {
                return bad(&format!(
                    "--userns {other:?}: expected auto (a private ID range) or host"
                ));
            }
        };
        let log_driver = match crate::container::logfile::Driver::parse(&self.log_driver) {
            Ok(d) => d,
            Err(e) => return bad(&e),
        };
        let network =
            crate::net::NetworkMode::parse(&self.network).map_err(ContainerError::invalid)?;
        let restart_policy = crate::container::restart::RestartPolicy::parse(&self.restart)?;
        let stop_signal = self
            .stop_signal
            .as_deref()
            .map(crate::container::kill::parse_signal)
            .transpose()?;
        let log_rotation = log_driver
            .rotation(&self.log_opt)
            .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
        let tuning = self.tuning()?;
        let healthcheck = self.healthcheck()?;
        let mut env_file_lines = Vec::new();
        for f in &self.env_file {
            env_file_lines.extend(options::read_env_file(f)?);
        }
        let mut opts = RunOptions {
            name: self.name,
            env: self.env,
            env_file_lines,
            workdir: self.workdir,
            user: self.user,
            hostname: self.hostname,
            memory: self
                .memory
                .as_deref()
                .map(|m| options::parse_memory("--memory", m))
                .transpose()?,
            cpus: self.cpus.as_deref().map(options::parse_cpus).transpose()?,
            pids_limit: self
                .pids_limit
                .as_deref()
                .map(options::parse_pids_limit)
                .transpose()?,
            read_only: self.read_only,
            volumes: self
                .volume
                .iter()
                .map(|v| options::parse_volume(v))
                .collect::<Result<_, _>>()?,
            volumes_from: self.volumes_from,
            volume_driver: self.volume_driver.filter(|d| !d.is_empty() && d != "local"),
            tmpfs: self
                .tmpfs
                .iter()
                .map(|t| match t.split_once(':') {
                    Some((p, o)) => (p.to_string(), o.to_string()),
                    None => (t.clone(), String::new()),
                })
                .collect(),
            cap_add: self.cap_add,
            cap_drop: self.cap_drop,
            seccomp: SeccompChoice::Default,
            no_new_privileges: true,
            privileged: self.privileged,
            oom_score_adj: self
                .oom_score_adj
                .as_deref()
                .map(options::parse_oom_score_adj)
                .transpose()?,
            masked_paths: None,
            readonly_paths: None,
            cgroup_parent: self.cgroup_parent,
            userns,
            pid_host: match self.pid.as_deref() {
                None | Some("") | Some("private") => false,
                Some("host") => true,
                Some(other) => return bad(&format!("--pid {other:?}: expected host")),
            },
            uts_host: match self.uts.as_deref() {
                None | Some("") | Some("private") => false,
                Some("host") => true,
                Some(other) => return bad(&format!("--uts {other:?}: expected host")),
            },
            log_rotation,
            log_driver,
            restart_policy,
            stop_signal,
            stop_timeout: self.stop_timeout,
            healthcheck,
            interactive: self.interactive,
            stdin_once: false,
            tty: self.tty,
            console_size: self
                .tty
                .then(|| crate::linux::sys::window_size(libc::STDOUT_FILENO).ok())
                .flatten(),
            init: self.init,
            network: network.0,
            network_name: network.1,
            ip: self
                .ip
                .as_deref()
                .map(|ip| {
                    ip.parse().map_err(|_| {
                        ContainerError::InvalidArgument(format!("--ip {ip:?}: not an IPv4 address"))
                    })
                })
                .transpose()?,
            mac: self
                .mac_address
                .as_deref()
                .map(crate::net::parse_mac)
                .transpose()
                .map_err(ContainerError::InvalidArgument)?,
            aliases: self.network_alias.clone(),
            link_local_ips: self
                .link_local_ip
                .iter()
                .map(|ip| crate::net::parse_link_local(ip))
                .collect::<Result<_, _>>()
                .map_err(ContainerError::InvalidArgument)?,
            endpoint_driver_opts: Default::default(),
            publish: self
                .publish
                .iter()
                .map(|p| crate::net::ports::PortMapping::parse(p))
                .collect::<Result<_, _>>()
                .map_err(ContainerError::invalid)?,
            publish_all: self.publish_all,
            expose: self
                .expose
                .iter()
                .map(|p| crate::net::ports::PortMapping::parse(p))
                .collect::<Result<_, _>>()
                .map_err(ContainerError::invalid)?,
            dns: self
                .dns
                .iter()
                .map(|d| {
                    d.parse().map_err(|_| {
                        ContainerError::InvalidArgument(format!("--dns {d:?}: not an IP address"))
                    })
                })
                .collect::<Result<_, _>>()?,
            add_hosts: self
                .add_host
                .iter()
                .filter(|h| !h.ends_with(":host-gateway"))
                .map(|h| options::parse_add_host(h))
                .collect::<Result<_, _>>()?,
            gateway_hosts: self
                .add_host
                .iter()
                .filter_map(|h| options::gateway_host(h).transpose())
                .collect::<Result<_, _>>()?,
            tuning,
            auto_remove: self.rm,
            entrypoint: self.entrypoint,
            image: self.image,
            command: self.command,
            isolation,
            vmm: self.vmm,
            labels: self
                .label
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l.clone(), String::new()),
                })
                .collect(),
            asked: Default::default(),
        };
        opts.asked.tmpfs = opts.tmpfs.clone();
        opts.asked.log_config = self
            .log_opt
            .iter()
            .filter_map(|o| o.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for m in &self.mount {
            match options::parse_mount(m)? {
                options::MountFlag::Volume(v) => opts.volumes.push(v),
                options::MountFlag::Tmpfs(path, o) => opts.tmpfs.push((path, o)),
            }
        }
        options::check(&mut opts, &self.security_opt)?;
        if opts.restart_policy != crate::container::restart::RestartPolicy::No
            && !self.detach
            && !create_only
        {
            return bad("--restart needs -d: a foreground run has no monitor to restart it");
        }
        Ok(opts)
    }
}

impl RunArgs {
    /// `--health-*` and `--no-healthcheck` as the check they give (None: the image's).
    fn healthcheck(&self) -> Result<Option<Healthcheck>, ContainerError> {
        let duration = |flag: &str, value: &Option<String>| -> Result<i64, ContainerError> {
            let Some(v) = value.as_deref() else {
                return Ok(0);
            };
            if v.starts_with('-') {
                return Err(ContainerError::InvalidArgument(format!(
                    "{flag} cannot be negative"
                )));
            }
            let d = humantime::parse_duration(v).map_err(|e| {
                ContainerError::InvalidArgument(format!("{flag} {v:?}: not a duration ({e})"))
            })?;
            Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        };
        let check = Healthcheck {
            test: self
                .health_cmd
                .iter()
                .flat_map(|c| ["CMD-SHELL".to_string(), c.clone()])
                .collect(),
            interval: duration("--health-interval", &self.health_interval)?,
            timeout: duration("--health-timeout", &self.health_timeout)?,
            start_period: duration("--health-start-period", &self.health_start_period)?,
            start_interval: duration("--health-start-interval", &self.health_start_interval)?,
            retries: match self.health_retries {
                Some(n) if n < 0 => {
                    return Err(ContainerError::InvalidArgument(
                        "--health-retries cannot be negative".into(),
                    ))
                }
                n => n.unwrap_or(0),
            },
        };
        if self.no_healthcheck {
            if check != Healthcheck::default() {
                return Err(ContainerError::InvalidArgument(
                    "--no-healthcheck conflicts with --health-* options".into(),
                ));
            }
            return Ok(Some(Healthcheck::none()));
        }
        let user = (check != Healthcheck::default()).then_some(check);
        health::check(user.as_ref())?;
        Ok(user)
    }

    /// The flags of [`Tuning`], parsed and checked one by one.
    fn tuning(&self) -> Result<Tuning, ContainerError> {
        let size = |flag: &str, v: &str| options::parse_memory(flag, v);
        let cpus_online = (self.isolation != "vm")
            .then(|| tuning::online("cpu"))
            .flatten();
        let nodes_online = (self.isolation != "vm")
            .then(|| tuning::online("node"))
            .flatten();
        let mut sysctls = std::collections::BTreeMap::new();
        for s in &self.sysctl {
            let (k, v, _) = tuning::parse_sysctl(s)?;
            sysctls.insert(k, v);
        }
        Ok(Tuning {
            group_add: self
                .group_add
                .iter()
                .map(|g| tuning::parse_group(g))
                .collect::<Result<_, _>>()?,
            cpu_shares: self
                .cpu_shares
                .map(tuning::parse_cpu_shares)
                .transpose()?
                .flatten(),
            cpuset_cpus: self
                .cpuset_cpus
                .as_deref()
                .map(|c| tuning::parse_cpuset("--cpuset-cpus", c, cpus_online.as_deref()))
                .transpose()?,
            cpuset_mems: self
                .cpuset_mems
                .as_deref()
                .map(|c| tuning::parse_cpuset("--cpuset-mems", c, nodes_online.as_deref()))
                .transpose()?,
            memory_swap: match self.memory_swap.as_deref() {
                None => None,
                Some("-1") => Some(-1),
                Some(v) => Some(size("--memory-swap", v)?),
            },
            memory_reservation: self
                .memory_reservation
                .as_deref()
                .map(|v| size("--memory-reservation", v))
                .transpose()?,
            memory_swappiness: self
                .memory_swappiness
                .map(tuning::parse_swappiness)
                .transpose()?
                .flatten(),
            oom_kill_disable: self.oom_kill_disable,
            blkio_weight: self
                .blkio_weight
                .map(tuning::parse_blkio_weight)
                .transpose()?
                .flatten(),
            ulimits: self
                .ulimit
                .iter()
                .map(|u| tuning::parse_ulimit(u))
                .collect::<Result<_, _>>()?,
            shm_size: self
                .shm_size
                .as_deref()
                .map(tuning::parse_shm_size)
                .transpose()?,
            sysctls,
            devices: self
                .device
                .iter()
                .map(|d| tuning::parse_device(d))
                .collect::<Result<_, _>>()?,
            cgroup_rules: self
                .device_cgroup_rule
                .iter()
                .map(|r| tuning::parse_cgroup_rule(r))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// `run` (or `create` when `create_only`). Returns the exit code.
pub fn run(root: &StateRoot, args: RunArgs, create_only: bool) -> i32 {
    let detach = args.detach;
    if !detach && !create_only {
        // In the foreground this CLI is the container's monitor: a closed stdout must not
        // end it before it has recorded the exit and cleaned up.
        crate::linux::sys::set_broken_pipe_kills(false);
    }
    let keys = match args
        .detach_keys
        .as_deref()
        .map(super::terminal::parse_detach_keys)
        .transpose()
    {
        Ok(k) => k.unwrap_or_else(|| super::terminal::DEFAULT_DETACH_KEYS.to_vec()),
        Err(e) => {
            super::print_error(format_args!("{e}"));
            return EXIT_ENGINE_ERROR;
        }
    };
    let (pull_policy, platform) = (args.pull.clone(), args.platform.clone());
    let opts = match args.into_options(create_only) {
        Ok(o) => o,
        Err(e) => {
            report(&e);
            return EXIT_ENGINE_ERROR;
        }
    };
    let image = match image_for_run(root, &opts.image, &pull_policy, platform.as_deref()) {
        Ok(i) => i,
        Err(e) => {
            report(&e);
            return EXIT_ENGINE_ERROR;
        }
    };
    let store = ContainerStore::new(root);
    if create_only || detach {
        return detached(&store, image, &opts, !create_only);
    }
    if opts.tty && api::sandbox(opts.isolation).terminal_run() == TerminalRun::Attach {
        return with_terminal(&store, image, opts, &keys);
    }
    let mut caller = super::terminal::Caller::new(opts.interactive, opts.tty);
    let outcome = api::run_foreground(&store, image, &opts, &mut render_notice, &mut caller);
    drop(caller); // the terminal leaves raw mode before anything more is printed
    match outcome {
        Ok(outcome) => {
            if let Some(msg) = outcome.exec_error {
                super::print_error(format_args!("{msg}"));
            }
            outcome.exit_code
        }
        Err(e) => {
            report(&e);
            EXIT_ENGINE_ERROR
        }
    }
}

/// Shows what a sandbox tells on the way (on stderr: stdout is the workload's).
pub(crate) fn render_notice(notice: Notice) {
    match notice {
        // `capsa compare` and bench/vm.py read this line.
        Notice::EngineChosen(reason) => eprintln!("capsa: vm isolation: {reason}"),
        Notice::VmTemplate(what) => eprintln!("capsa: vm template: {what}"),
    }
}

/// The image `run` uses: from the store, pulled first when missing (or always, with
/// `--pull always`), as `docker run` does; progress goes to standard error.
fn image_for_run(
    root: &StateRoot,
    name: &str,
    policy: &str,
    platform: Option<&str>,
) -> Result<crate::image::Image, crate::image::ImageError> {
    use crate::image::ImageError;
    let store = ImageStore::new(root);
    let local = match policy {
        "always" => Err(ImageError::NotFound(name.to_string())),
        _ => store.resolve(name),
    };
    match local {
        Err(ImageError::NotFound(_)) if policy != "never" => {
            if policy == "missing" {
                eprintln!("Unable to find image '{name}' locally");
            }
            let to = super::registry::ProgressTo::Stderr;
            let full = super::registry::pull_image(root, name, platform, to)?;
            store.resolve(&full)
        }
        other => other,
    }
}

/// `run -t` in the foreground: a monitor holds the pty; this CLI attaches, starts, and
/// relays until the container exits (its code) or the detach keys are typed (0, the
/// container runs on). With `--rm`, the container is removed once it has exited, by this
/// CLI or, after a detach, by its monitor.
fn with_terminal(
    store: &ContainerStore,
    image: crate::image::Image,
    mut opts: RunOptions,
    keys: &[u8],
) -> i32 {
    let auto_remove = std::mem::replace(&mut opts.auto_remove, false);
    let id = match api::create(store, image, &opts, &mut render_notice) {
        Ok(id) => id,
        Err(e) => {
            report(&e);
            return EXIT_ENGINE_ERROR;
        }
    };
    match super::containers::attach_and_start(store, &id, opts.interactive, keys, true) {
        Ok(Some(code)) => {
            if auto_remove {
                let _ = api::remove_with_volumes(store, &id, true);
            }
            code
        }
        Ok(None) => {
            if auto_remove {
                let _ = store.update(&id, |s| s.auto_remove = true);
            }
            0
        }
        Err(e) => {
            report(&e);
            EXIT_ENGINE_ERROR
        }
    }
}

/// `create`, or `run -d` (`start_it`): the container's ID on stdout once it exists (and
/// its workload started).
fn detached(
    store: &ContainerStore,
    image: crate::image::Image,
    opts: &RunOptions,
    start_it: bool,
) -> i32 {
    let made = if start_it {
        api::run_detached(store, image, opts, &mut render_notice)
    } else {
        api::create(store, image, opts, &mut render_notice).map(|id| (id, ExecOutcome::Started))
    };
    match made {
        Ok((id, ExecOutcome::Started)) => {
            println!("{id}");
            0
        }
        Ok((_, ExecOutcome::Failed(code, msg))) => {
            super::print_error(format_args!("{msg}"));
            code
        }
        Err(e) => {
            report(&e);
            EXIT_ENGINE_ERROR
        }
    }
}
