//! `POST /containers/create`'s body (Docker's `ContainerConfig` with its `HostConfig` and
//! `NetworkingConfig`) read into typed structs and turned into the [`RunOptions`] the CLI's
//! `capsa create` makes, checked by the same library code
//! ([`crate::container::options::check`]). Unknown fields are ignored (as dockerd ignores
//! them); a field of the wrong type is refused with its name (see [`super::http`]). Every
//! field may be `null`, as clients send it.
//!
//! What capsa cannot do is either refused (400, naming the field) when ignoring it would
//! change what the workload sees, or named in the answer's `Warnings` when capsa drops it
//! (DNS search domains, the NIS domain name).

use super::http::{ApiError, ApiResult};
use crate::container::options::{self, MountFlag, RunOptions, SeccompChoice, Volume};
use crate::container::restart::RestartPolicy;
use crate::container::sandbox::Isolation;
use crate::container::tuning::{self, Tuning};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A list Docker also accepts as one string (`Cmd`, `Entrypoint`: `"sh"` or `["sh"]`).
#[derive(Debug, Clone, Default)]
pub struct StrSlice(pub Vec<String>);

impl<'de> Deserialize<'de> for StrSlice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        match Form::deserialize(d) {
            Ok(Form::One(s)) => Ok(StrSlice(vec![s])),
            Ok(Form::Many(v)) => Ok(StrSlice(v)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a string or a list of strings",
            )),
        }
    }
}

/// The request body: the container's config, with `HostConfig` and `NetworkingConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateBody {
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub user: Option<String>,
    pub attach_stdin: Option<bool>,
    pub attach_stdout: Option<bool>,
    pub attach_stderr: Option<bool>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub tty: Option<bool>,
    pub open_stdin: Option<bool>,
    pub stdin_once: Option<bool>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<StrSlice>,
    pub healthcheck: Option<HealthConfig>,
    pub image: Option<String>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub working_dir: Option<String>,
    pub entrypoint: Option<StrSlice>,
    pub mac_address: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
    pub network_disabled: Option<bool>,
}

/// `Healthcheck`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HealthConfig {
    pub test: Option<Vec<String>>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub start_interval: Option<i64>,
    pub retries: Option<i64>,
}

impl HealthConfig {
    /// The check as the library takes it (an absent field inherits from the image).
    fn into_check(self) -> crate::container::health::Healthcheck {
        crate::container::health::Healthcheck {
            test: self.test.unwrap_or_default(),
            interval: self.interval.unwrap_or(0),
            timeout: self.timeout.unwrap_or(0),
            start_period: self.start_period.unwrap_or(0),
            start_interval: self.start_interval.unwrap_or(0),
            retries: self.retries.unwrap_or(0),
        }
    }
}

/// `HostConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub mounts: Option<Vec<Mount>>,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub publish_all_ports: Option<bool>,
    pub network_mode: Option<String>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub pids_limit: Option<i64>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub security_opt: Option<Vec<String>>,
    pub readonly_rootfs: Option<bool>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub restart_policy: Option<RestartPolicyBody>,
    pub auto_remove: Option<bool>,
    pub init: Option<bool>,
    pub console_size: Option<Vec<u16>>,
    pub privileged: Option<bool>,
    pub log_config: Option<LogConfig>,
    pub dns: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub dns_options: Option<Vec<String>>,
    pub extra_hosts: Option<Vec<String>>,
    pub cgroup_parent: Option<String>,
    pub userns_mode: Option<String>,
    pub isolation: Option<String>,
    pub runtime: Option<String>,
    pub devices: Option<Vec<DeviceBody>>,
    pub ulimits: Option<Vec<UlimitBody>>,
    pub shm_size: Option<i64>,
    pub sysctls: Option<BTreeMap<String, String>>,
    pub oom_kill_disable: Option<bool>,
    pub memory_swappiness: Option<i64>,
    pub blkio_weight: Option<i64>,
    pub device_cgroup_rules: Option<Vec<String>>,
    pub volume_driver: Option<String>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub cgroupns_mode: Option<String>,
    pub volumes_from: Option<Vec<String>>,
    pub links: Option<Vec<String>>,
    pub group_add: Option<Vec<String>>,
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    #[serde(rename = "UTSMode")]
    pub uts_mode: Option<String>,
    pub oom_score_adj: Option<i64>,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub storage_opt: Option<BTreeMap<String, String>>,
    pub blkio_weight_device: Option<Vec<serde_json::Value>>,
    pub blkio_device_read_bps: Option<Vec<serde_json::Value>>,
    pub blkio_device_write_bps: Option<Vec<serde_json::Value>>,
    #[serde(rename = "BlkioDeviceReadIOps")]
    pub blkio_device_read_iops: Option<Vec<serde_json::Value>>,
    #[serde(rename = "BlkioDeviceWriteIOps")]
    pub blkio_device_write_iops: Option<Vec<serde_json::Value>>,
    pub device_requests: Option<Vec<serde_json::Value>>,
    pub cpu_realtime_period: Option<i64>,
    pub cpu_realtime_runtime: Option<i64>,
}

/// One of `HostConfig.Devices`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DeviceBody {
    pub path_on_host: Option<String>,
    pub path_in_container: Option<String>,
    pub cgroup_permissions: Option<String>,
}

/// One of `HostConfig.Ulimits`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UlimitBody {
    pub name: Option<String>,
    pub soft: Option<i64>,
    pub hard: Option<i64>,
}

/// One of `HostConfig.Mounts`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Mount {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: Option<bool>,
    pub bind_options: Option<BindOptions>,
    pub volume_options: Option<VolumeOptions>,
    pub tmpfs_options: Option<TmpfsOptions>,
}

/// `Mount.BindOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct BindOptions {
    pub propagation: Option<String>,
    pub non_recursive: Option<bool>,
    pub read_only_non_recursive: Option<bool>,
}

/// `Mount.VolumeOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VolumeOptions {
    pub no_copy: Option<bool>,
    pub subpath: Option<String>,
    pub driver_config: Option<DriverConfig>,
}

/// `Mount.VolumeOptions.DriverConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DriverConfig {
    pub name: Option<String>,
    pub options: Option<BTreeMap<String, String>>,
}

/// `Mount.TmpfsOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TmpfsOptions {
    pub size_bytes: Option<i64>,
    pub mode: Option<u32>,
}

/// One of `HostConfig.PortBindings["80/tcp"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: Option<String>,
    pub host_port: Option<String>,
}

/// `HostConfig.RestartPolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct RestartPolicyBody {
    pub name: Option<String>,
    pub maximum_retry_count: Option<i64>,
}

/// `HostConfig.LogConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub config: Option<BTreeMap<String, String>>,
}

/// `NetworkingConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkingConfig {
    pub endpoints_config: Option<BTreeMap<String, Option<EndpointSettings>>>,
}

/// One of `NetworkingConfig.EndpointsConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct EndpointSettings {
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<IpamConfig>,
    pub mac_address: Option<String>,
    pub driver_opts: Option<BTreeMap<String, String>>,
}

/// `EndpointSettings.IPAMConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IpamConfig {
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: Option<String>,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: Option<String>,
    #[serde(rename = "LinkLocalIPs")]
    pub link_local_ips: Option<Vec<String>>,
}

/// What the server adds to a request: its default cgroup parent.
pub struct Defaults<'a> {
    /// `HostConfig.CgroupParent` when the request leaves it empty.
    pub cgroup_parent: Option<&'a str>,
}

/// The options for `capsa create`'s library call, and the warnings to answer with.
pub fn to_options(
    body: CreateBody,
    name: Option<String>,
    defaults: &Defaults,
) -> ApiResult<(RunOptions, Vec<String>)> {
    let bad = |m: String| ApiError::bad_request(m);
    let mut warnings = Vec::new();
    let mut host = body.host_config.unwrap_or_default();
    let image = body
        .image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("Config.Image: an image is required".into()))?;
    let isolation = isolation(host.isolation.as_deref(), host.runtime.as_deref())?;
    let mut host_tuning = TuningFields {
        group_add: host.group_add.take().unwrap_or_default(),
        cpu_shares: host.cpu_shares.unwrap_or(0),
        cpuset_cpus: host.cpuset_cpus.take().filter(|c| !c.is_empty()),
        cpuset_mems: host.cpuset_mems.take().filter(|c| !c.is_empty()),
        memory_swap: host.memory_swap.unwrap_or(0),
        memory_reservation: host.memory_reservation.unwrap_or(0),
        oom_kill_disable: host.oom_kill_disable.unwrap_or(false),
        memory_swappiness: host.memory_swappiness.unwrap_or(-1),
        blkio_weight: host.blkio_weight.unwrap_or(0),
        ulimits: host.ulimits.take().unwrap_or_default(),
        shm_size: host.shm_size.unwrap_or(0),
        sysctls: host.sysctls.take().unwrap_or_default(),
        devices: host.devices.take().unwrap_or_default(),
        cgroup_rules: host.device_cgroup_rules.take().unwrap_or_default(),
    };
    // What would change the workload's world if it were dropped is refused.
    let absent = |field: &str, given: bool| match given {
        true => Err(bad(format!("HostConfig.{field} is not supported by capsa"))),
        false => Ok(()),
    };
    let some = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
    // Capsa gives every container its own cgroup namespace.
    absent(
        "CgroupnsMode",
        host.cgroupns_mode
            .as_deref()
            .is_some_and(|m| !m.is_empty() && m != "private"),
    )?;
    absent("Links", some(&host.links))?;
    // Limits and devices capsa does not apply: refused, so a container is never less
    // confined, or differently equipped, than asked.
    absent(
        "StorageOpt",
        host.storage_opt.as_ref().is_some_and(|o| !o.is_empty()),
    )?;
    for (field, list) in [
        ("BlkioWeightDevice", &host.blkio_weight_device),
        ("BlkioDeviceReadBps", &host.blkio_device_read_bps),
        ("BlkioDeviceWriteBps", &host.blkio_device_write_bps),
        ("BlkioDeviceReadIOps", &host.blkio_device_read_iops),
        ("BlkioDeviceWriteIOps", &host.blkio_device_write_iops),
        ("DeviceRequests", &host.device_requests),
    ] {
        absent(field, list.as_ref().is_some_and(|l| !l.is_empty()))?;
    }
    absent(
        "CpuRealtimePeriod",
        host.cpu_realtime_period.is_some_and(|v| v != 0),
    )?;
    absent(
        "CpuRealtimeRuntime",
        host.cpu_realtime_runtime.is_some_and(|v| v != 0),
    )?;
    let oom_score_adj = match host.oom_score_adj.unwrap_or(0) {
        0 => None,
        v => Some(options::parse_oom_score_adj(&v.to_string())?),
    };
    let mode = |m: &Option<String>, allowed: &[&str]| {
        m.as_deref()
            .is_some_and(|m| !m.is_empty() && !allowed.contains(&m))
    };
    absent("PidMode", mode(&host.pid_mode, &["private", "host"]))?;
    let pid_host = host.pid_mode.as_deref() == Some("host");
    absent("IpcMode", mode(&host.ipc_mode, &["private", "shareable"]))?;
    absent("UTSMode", mode(&host.uts_mode, &["private", "host"]))?;
    let uts_host = host.uts_mode.as_deref() == Some("host");
    let userns = match host.userns_mode.as_deref().unwrap_or("") {
        "" | "host" => false,
        "auto" => true,
        other => {
            return Err(bad(format!(
                "HostConfig.UsernsMode {other:?}: expected host, auto (a private ID range) or empty"
            )))
        }
    };
    let log = host.log_config.unwrap_or_default();
    let log_driver =
        crate::container::logfile::Driver::parse(log.kind.as_deref().unwrap_or("")).map_err(bad)?;
    let log_config = log.config.unwrap_or_default();
    let log_opts: Vec<String> = log_config
        .clone()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let log_rotation = log_driver
        .rotation(&log_opts)
        .map_err(|e| bad(format!("HostConfig.LogConfig.Config: {e}")))?;
    let restart_policy = match host.restart_policy.unwrap_or_default() {
        RestartPolicyBody { name: None, .. } => RestartPolicy::No,
        RestartPolicyBody {
            name: Some(n),
            maximum_retry_count,
        } => match (n.as_str(), maximum_retry_count.unwrap_or(0)) {
            ("", _) => RestartPolicy::No,
            ("on-failure", n) if n > 0 => RestartPolicy::parse(&format!("on-failure:{n}"))?,
            (policy, 0) => RestartPolicy::parse(policy)?,
            (policy, _) => {
                return Err(bad(format!(
                    "HostConfig.RestartPolicy: maximum retry count cannot be used with restart policy '{policy}'"
                )))
            }
        },
    };
    let stop_signal = body
        .stop_signal
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(crate::container::kill::parse_signal)
        .transpose()?;
    let stop_timeout = match body.stop_timeout {
        None => None,
        Some(t) if t >= 0 => Some(t as u64),
        Some(t) => return Err(bad(format!("Config.StopTimeout {t}: must not be negative"))),
    };
    let memory = match host.memory.unwrap_or(0) {
        0 => None,
        m => Some(options::parse_memory("HostConfig.Memory", &m.to_string())?),
    };
    let cpus = match (host.nano_cpus.unwrap_or(0), host.cpu_quota.unwrap_or(0)) {
        (0, 0) => None,
        (n, 0) if n > 0 => Some(options::parse_cpus(&(n as f64 / 1e9).to_string())?),
        (0, q) if q > 0 => {
            let period = match host.cpu_period.unwrap_or(0) {
                0 => 100_000,
                p => p,
            };
            Some(options::parse_cpus(
                &(q as f64 / period as f64).to_string(),
            )?)
        }
        (0, _) | (_, 0) => {
            return Err(bad("HostConfig.NanoCpus, CpuQuota: must be positive".into()))
        }
        _ => {
            return Err(bad(
                "Conflicting options: Nano CPUs and CPU Period cannot both be set".into(),
            ))
        }
    };
    let pids_limit = host
        .pids_limit
        .map(|p| options::parse_pids_limit(&p.to_string()))
        .transpose()?
        .filter(|p| *p > 0);
    // `NetworkDisabled` (docker-py's network_disabled): loopback only, whatever the mode.
    let network_mode = match host.network_mode.as_deref().unwrap_or("") {
        _ if body.network_disabled == Some(true) => "none".to_string(),
        "" | "default" => "bridge".to_string(),
        m => m.to_string(),
    };
    let (network, network_name) = crate::net::NetworkMode::parse(&network_mode)
        .map_err(|e| bad(format!("HostConfig.NetworkMode: {e}")))?;
    let endpoints = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default();
    let mut endpoint = None;
    for (net, settings) in endpoints {
        if net != network_name && !(network_name == "bridge" && net == "default") {
            return Err(bad(format!(
                "NetworkingConfig.EndpointsConfig: {net:?} is not HostConfig.NetworkMode ({network_name}); connect more networks after create"
            )));
        }
        endpoint = settings;
    }
    let endpoint = endpoint.unwrap_or_default();
    let ipam = endpoint.ipam_config.unwrap_or_default();
    if ipam.ipv6_address.as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(bad(
            "NetworkingConfig.EndpointsConfig.IPAMConfig.IPv6Address: capsa's networks are IPv4 only"
                .into(),
        ));
    }
    let link_local_ips = ipam
        .link_local_ips
        .unwrap_or_default()
        .iter()
        .map(|ip| {
            crate::net::parse_link_local(ip).map_err(|e| {
                bad(format!(
                    "NetworkingConfig.EndpointsConfig.IPAMConfig.LinkLocalIPs: {e}"
                ))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let ip = ipam
        .ipv4_address
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            ip.parse().map_err(|_| {
                bad(format!(
                    "NetworkingConfig.EndpointsConfig.IPAMConfig.IPv4Address {ip:?}: not an IPv4 address"
                ))
            })
        })
        .transpose()?;
    let mac = endpoint
        .mac_address
        .or(body.mac_address)
        .filter(|m| !m.is_empty())
        .map(|m| crate::net::parse_mac(&m))
        .transpose()
        .map_err(bad)?;
    let mut publish = Vec::new();
    for (port, bindings) in host.port_bindings.unwrap_or_default() {
        for b in bindings.unwrap_or_default() {
            let ip = b.host_ip.unwrap_or_default();
            let host_port = b.host_port.unwrap_or_default();
            let spec = match ip.as_str() {
                "" => format!("{host_port}:{port}"),
                ip => format!("{ip}:{host_port}:{port}"),
            };
            let spec = spec.trim_start_matches(':').to_string();
            publish.push(
                crate::net::ports::PortMapping::parse(&spec)
                    .map_err(|e| bad(format!("HostConfig.PortBindings {port:?}: {e}")))?,
            );
        }
    }
    let expose = body
        .exposed_ports
        .unwrap_or_default()
        .into_keys()
        .map(|port| {
            crate::net::ports::PortMapping::parse(&port)
                .map_err(|e| bad(format!("Config.ExposedPorts {port:?}: {e}")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let dns = host
        .dns
        .unwrap_or_default()
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|_| bad(format!("HostConfig.Dns {d:?}: not an IP address")))
        })
        .collect::<ApiResult<_>>()?;
    if !host.dns_search.unwrap_or_default().is_empty()
        || !host.dns_options.unwrap_or_default().is_empty()
    {
        warnings.push(
            "capsa writes no search domains nor options in resolv.conf: HostConfig.DnsSearch and DnsOptions are ignored"
                .into(),
        );
    }
    // API 1.44 clients may write NAME=IP.
    let extra_hosts: Vec<String> = host
        .extra_hosts
        .unwrap_or_default()
        .iter()
        .map(|h| h.replacen('=', ":", 1))
        .collect();
    let gateway_hosts = extra_hosts
        .iter()
        .filter_map(|h| options::gateway_host(h).transpose())
        .collect::<Result<_, _>>()?;
    let add_hosts = extra_hosts
        .iter()
        .filter(|h| !h.ends_with(":host-gateway"))
        .map(|h| options::parse_add_host(h))
        .collect::<Result<_, _>>()?;
    if body.domainname.as_deref().is_some_and(|d| !d.is_empty()) {
        warnings.push("capsa sets no NIS domain name: Config.Domainname is ignored".into());
    }
    let healthcheck = body.healthcheck.map(HealthConfig::into_check);
    crate::container::health::check(healthcheck.as_ref())?;
    let mut volumes: Vec<Volume> = host
        .binds
        .unwrap_or_default()
        .iter()
        .map(|b| options::parse_volume(b))
        .collect::<Result<_, _>>()?;
    let mut tmpfs: Vec<(String, String)> = host.tmpfs.unwrap_or_default().into_iter().collect();
    let asked_tmpfs = tmpfs.clone();
    for (i, m) in host.mounts.unwrap_or_default().into_iter().enumerate() {
        match options::parse_mount(&mount_flag(i, m)?)? {
            MountFlag::Volume(v) => volumes.push(v),
            MountFlag::Tmpfs(path, o) => tmpfs.push((path, o)),
        }
    }
    // `Config.Volumes`: anonymous volumes where nothing else is mounted.
    for path in body.volumes.unwrap_or_default().into_keys() {
        if !volumes.iter().any(|v| v.container == path) && !tmpfs.iter().any(|(p, _)| *p == path) {
            volumes.push(options::parse_volume(&path)?);
        }
    }
    let (entrypoint, mut command) = match body.entrypoint.map(|e| e.0) {
        Some(e) if !e.is_empty() => {
            let mut e = e.into_iter();
            (e.next(), e.collect())
        }
        _ => (None, Vec::new()),
    };
    command.extend(body.cmd.map(|c| c.0).unwrap_or_default());
    let cgroup_parent = host
        .cgroup_parent
        .filter(|p| !p.is_empty())
        .or_else(|| defaults.cgroup_parent.map(String::from));
    let tuning = tuning(&mut host_tuning, isolation)?;
    let env = body.env.unwrap_or_default();
    let mut opts = RunOptions {
        name,
        // `K` without a value: the docker CLI resolves it; the server's own environment
        // must never reach a container.
        env: env.iter().filter(|e| e.contains('=')).cloned().collect(),
        env_file_lines: Vec::new(),
        workdir: body.working_dir.filter(|w| !w.is_empty()),
        user: body.user.filter(|u| !u.is_empty()),
        hostname: body.hostname.filter(|h| !h.is_empty()),
        memory,
        cpus,
        pids_limit,
        read_only: host.readonly_rootfs.unwrap_or(false),
        volumes,
        volumes_from: host.volumes_from.clone().unwrap_or_default(),
        volume_driver: host
            .volume_driver
            .clone()
            .filter(|d| !d.is_empty() && d != "local"),
        tmpfs,
        cap_add: host.cap_add.unwrap_or_default(),
        cap_drop: host.cap_drop.unwrap_or_default(),
        seccomp: SeccompChoice::Default,
        no_new_privileges: true,
        privileged: host.privileged.unwrap_or(false),
        oom_score_adj,
        masked_paths: host.masked_paths.take(),
        readonly_paths: host.readonly_paths.take(),
        cgroup_parent,
        userns,
        uts_host,
        pid_host,
        log_rotation,
        log_driver,
        restart_policy,
        stop_signal,
        stop_timeout,
        healthcheck,
        interactive: body.open_stdin.unwrap_or(false),
        stdin_once: body.stdin_once.unwrap_or(false),
        tty: body.tty.unwrap_or(false),
        console_size: host.console_size.as_deref().and_then(|s| match s {
            [rows, cols] if *rows > 0 && *cols > 0 => Some((*rows, *cols)),
            _ => None,
        }),
        init: host.init.unwrap_or(false),
        network,
        network_name,
        ip,
        mac,
        aliases: endpoint.aliases.unwrap_or_default(),
        link_local_ips,
        endpoint_driver_opts: endpoint.driver_opts.unwrap_or_default(),
        publish,
        publish_all: host.publish_all_ports.unwrap_or(false),
        expose,
        dns,
        add_hosts,
        gateway_hosts,
        tuning,
        auto_remove: host.auto_remove.unwrap_or(false),
        entrypoint,
        image,
        command,
        isolation,
        vmm: None,
        labels: body.labels.unwrap_or_default(),
        asked: crate::container::state::Asked {
            env_names: env.into_iter().filter(|e| !e.contains('=')).collect(),
            isolation: host.isolation.clone().unwrap_or_default(),
            init: false,
            tmpfs: asked_tmpfs,
            log_config,
            ..Default::default()
        },
    };
    let security_opts = host.security_opt.unwrap_or_default();
    refuse_profile_paths(&security_opts)?;
    options::check(&mut opts, &security_opts)?;
    Ok((opts, warnings))
}

/// A seccomp profile comes over the API as its JSON, as the docker CLI sends it to dockerd
/// (which never opens a path): a path would have the server read a file of its host
/// (a FIFO hung it, /dev/zero had no end) for whoever can reach the socket.
fn refuse_profile_paths(security_opts: &[String]) -> Result<(), crate::container::ContainerError> {
    for so in security_opts {
        let Some((key, value)) = so.split_once(['=', ':']) else {
            continue;
        };
        if key == "seccomp" && value != "unconfined" && !value.trim_start().starts_with('{') {
            return Err(crate::container::ContainerError::InvalidArgument(format!(
                "SecurityOpt {so:?}: give the seccomp profile's JSON itself (or unconfined); \
                 the API does not read files of the server's host"
            )));
        }
    }
    Ok(())
}

/// The `HostConfig` fields that become [`Tuning`], taken out of it.
struct TuningFields {
    group_add: Vec<String>,
    cpu_shares: i64,
    cpuset_cpus: Option<String>,
    cpuset_mems: Option<String>,
    memory_swap: i64,
    memory_reservation: i64,
    memory_swappiness: i64,
    oom_kill_disable: bool,
    blkio_weight: i64,
    ulimits: Vec<UlimitBody>,
    shm_size: i64,
    sysctls: BTreeMap<String, String>,
    devices: Vec<DeviceBody>,
    cgroup_rules: Vec<String>,
}

/// `GroupAdd`, `CpuShares`, `Cpuset*`, `MemorySwap`, `MemoryReservation`,
/// `OomKillDisable`, `BlkioWeight`, `Ulimits`, `ShmSize`, `Sysctls`, `Devices`, checked by
/// the parsers the CLI's flags go through (their errors name the flag).
fn tuning(f: &mut TuningFields, isolation: Isolation) -> ApiResult<Tuning> {
    // The parsers' messages name the CLI's flag; the answer names the field as well.
    let named = |field: &'static str| {
        move |e: crate::container::ContainerError| {
            ApiError::bad_request(format!("HostConfig.{field}: {e}"))
        }
    };
    let on_host = |kind: &str| {
        (isolation == Isolation::Container)
            .then(|| tuning::online(kind))
            .flatten()
    };
    let size = |field: &'static str, v: i64| match v {
        0 => Ok(None),
        v => options::parse_memory(field, &v.to_string()).map(Some),
    };
    let mut sysctls = BTreeMap::new();
    for (k, v) in std::mem::take(&mut f.sysctls) {
        let (k, v, _) = tuning::parse_sysctl(&format!("{k}={v}")).map_err(named("Sysctls"))?;
        sysctls.insert(k, v);
    }
    let mut ulimits = Vec::new();
    for u in std::mem::take(&mut f.ulimits) {
        let name = u.name.unwrap_or_default();
        let (soft, hard) = (u.soft.unwrap_or(0), u.hard.unwrap_or(0));
        ulimits.push(
            tuning::parse_ulimit(&format!("{name}={soft}:{hard}")).map_err(named("Ulimits"))?,
        );
    }
    let mut devices = Vec::new();
    for d in std::mem::take(&mut f.devices) {
        let host = d.path_on_host.unwrap_or_default();
        let ctr = d.path_in_container.filter(|c| !c.is_empty());
        let access = d.cgroup_permissions.filter(|p| !p.is_empty());
        let flag = [Some(host), ctr, access]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(":");
        devices.push(tuning::parse_device(&flag).map_err(named("Devices"))?);
    }
    let shm_size = match f.shm_size {
        0 => None,
        n if n > 0 => Some(n as u64),
        n => {
            return Err(ApiError::bad_request(format!(
                "HostConfig.ShmSize {n}: must not be negative"
            )))
        }
    };
    Ok(Tuning {
        group_add: std::mem::take(&mut f.group_add)
            .iter()
            .map(|g| tuning::parse_group(g))
            .collect::<Result<_, _>>()
            .map_err(named("GroupAdd"))?,
        cpu_shares: tuning::parse_cpu_shares(f.cpu_shares).map_err(named("CpuShares"))?,
        cpuset_cpus: f
            .cpuset_cpus
            .take()
            .map(|c| tuning::parse_cpuset("--cpuset-cpus", &c, on_host("cpu").as_deref()))
            .transpose()
            .map_err(named("CpusetCpus"))?,
        cpuset_mems: f
            .cpuset_mems
            .take()
            .map(|c| tuning::parse_cpuset("--cpuset-mems", &c, on_host("node").as_deref()))
            .transpose()
            .map_err(named("CpusetMems"))?,
        memory_swap: match f.memory_swap {
            -1 => Some(-1),
            v => size("HostConfig.MemorySwap", v)?,
        },
        memory_reservation: size("HostConfig.MemoryReservation", f.memory_reservation)?,
        memory_swappiness: tuning::parse_swappiness(f.memory_swappiness)
            .map_err(named("MemorySwappiness"))?,
        oom_kill_disable: f.oom_kill_disable,
        blkio_weight: tuning::parse_blkio_weight(f.blkio_weight).map_err(named("BlkioWeight"))?,
        ulimits,
        shm_size,
        sysctls,
        devices,
        cgroup_rules: std::mem::take(&mut f.cgroup_rules)
            .iter()
            .map(|r| tuning::parse_cgroup_rule(r))
            .collect::<Result<_, _>>()
            .map_err(named("DeviceCgroupRules"))?,
    })
}

/// `HostConfig.Isolation` and `HostConfig.Runtime`: `vm` / `capsa-vm` choose the microVM,
/// `default`, `process`, `runc` or nothing the container.
fn isolation(isolation: Option<&str>, runtime: Option<&str>) -> ApiResult<Isolation> {
    let by_isolation = match isolation.unwrap_or("") {
        "" | "default" | "process" => None,
        "vm" => Some(Isolation::Vm),
        other => {
            return Err(ApiError::bad_request(format!(
                "HostConfig.Isolation {other:?}: expected vm, default or empty"
            )))
        }
    };
    let by_runtime = match runtime.unwrap_or("") {
        "" => None,
        "runc" => Some(Isolation::Container),
        "capsa-vm" => Some(Isolation::Vm),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown or invalid runtime name: {other}"
            )))
        }
    };
    match (by_isolation, by_runtime) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad_request(
            "HostConfig.Isolation vm and HostConfig.Runtime runc contradict each other",
        )),
        (a, b) => Ok(a.or(b).unwrap_or(Isolation::Container)),
    }
}

/// One of `HostConfig.Mounts` as the `--mount` value the CLI's parser checks.
fn mount_flag(i: usize, m: Mount) -> ApiResult<String> {
    let mut fields = vec![format!("type={}", m.kind.as_deref().unwrap_or("volume"))];
    let mut push = |key: &str, value: &str| -> ApiResult<()> {
        if value.contains(',') {
            return Err(ApiError::bad_request(format!(
                "HostConfig.Mounts[{i}].{key}: a value with a comma is not supported"
            )));
        }
        fields.push(format!("{key}={value}"));
        Ok(())
    };
    if let Some(s) = m.source.as_deref().filter(|s| !s.is_empty()) {
        push("source", s)?;
    }
    push("target", m.target.as_deref().unwrap_or(""))?;
    if m.read_only.unwrap_or(false) {
        push("readonly", "true")?;
    }
    let bind = m.bind_options.unwrap_or_default();
    if let Some(p) = bind.propagation.filter(|p| !p.is_empty()) {
        push("bind-propagation", &p)?;
    }
    // What the parser refuses by name, rather than dropped here: each would mount
    // something other than what was asked.
    if bind.non_recursive == Some(true) {
        push("bind-recursive", "disabled")?;
    }
    if bind.read_only_non_recursive == Some(true) {
        push("bind-recursive", "writable")?;
    }
    let volume = m.volume_options.unwrap_or_default();
    if volume.no_copy.unwrap_or(false) {
        push("volume-nocopy", "true")?;
    }
    if let Some(sub) = volume.subpath.filter(|s| !s.is_empty()) {
        push("volume-subpath", &sub)?;
    }
    if let Some(driver) = volume.driver_config {
        if let Some(name) = driver.name.filter(|n| !n.is_empty()) {
            push("volume-driver", &name)?;
        }
        if driver.options.is_some_and(|o| !o.is_empty()) {
            push("volume-opt", "given")?;
        }
    }
    if let Some(t) = m.tmpfs_options {
        if let Some(size) = t.size_bytes.filter(|s| *s > 0) {
            push("tmpfs-size", &size.to_string())?;
        }
        if let Some(mode) = t.mode.filter(|m| *m != 0) {
            push("tmpfs-mode", &format!("{mode:o}"))?;
        }
    }
    Ok(fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::http::parse_json;

    fn options(json: &str) -> ApiResult<(RunOptions, Vec<String>)> {
        let body: CreateBody = parse_json(json.as_bytes())?;
        to_options(
            body,
            None,
            &Defaults {
                cgroup_parent: Some("capsa-test"),
            },
        )
    }

    #[test]
    fn what_the_docker_cli_sends_becomes_run_options() {
        let (o, warnings) = options(
            r#"{"Image":"busybox","Cmd":["sleep","1"],"Entrypoint":null,"Env":["A=b","FROM_CALLER"],
                "Labels":{"k":"v"},"Tty":true,"OpenStdin":true,"Volumes":{"/data":{}},
                "Unknown":1,"HostConfig":{"Binds":["/tmp:/host:ro"],"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]},
                "NetworkMode":"default","Memory":67108864,"NanoCpus":500000000,"PidsLimit":null,
                "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},"CgroupParent":"",
                "Mounts":[{"Type":"tmpfs","Target":"/scratch","TmpfsOptions":{"SizeBytes":1048576}}],
                "Isolation":"vm","CpuShares":512}}"#,
        )
        .unwrap();
        assert_eq!(o.command, ["sleep", "1"]);
        assert_eq!(o.env, ["A=b"]);
        assert_eq!(o.labels["k"], "v");
        assert!(o.tty && o.interactive);
        assert_eq!(o.memory, Some(64 << 20));
        assert_eq!(o.cpus, Some(0.5));
        assert_eq!(o.publish[0].host_port, 8080);
        assert_eq!(o.publish[0].container_port, 80);
        assert_eq!(o.volumes.len(), 2);
        assert!(o.volumes[0].read_only);
        assert_eq!(o.tmpfs[0].0, "/scratch");
        assert_eq!(o.restart_policy, RestartPolicy::OnFailure { max: 3 });
        assert_eq!(o.cgroup_parent.as_deref(), Some("capsa-test"));
        assert_eq!(o.isolation, Isolation::Vm);
        assert_eq!(o.tuning.cpu_shares, Some(512));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn tuning_fields_become_the_clis_flags() {
        let (o, _) = options(
            r#"{"Image":"busybox","HostConfig":{"GroupAdd":["wheel","42"],
                "Ulimits":[{"Name":"nofile","Soft":512,"Hard":1024}],"ShmSize":8388608,
                "Sysctls":{"kernel.shmmax":"7777"},"Memory":67108864,"MemorySwap":-1,
                "MemoryReservation":33554432,"BlkioWeight":300,"OomKillDisable":true,
                "Devices":[{"PathOnHost":"/dev/null","PathInContainer":"/dev/n","CgroupPermissions":"r"}],
                "ExtraHosts":["gw:host-gateway","db:10.0.0.5"]}}"#,
        )
        .unwrap();
        let t = &o.tuning;
        assert_eq!(t.group_add, ["wheel", "42"]);
        assert_eq!((t.ulimits[0].soft, t.ulimits[0].hard), (512, 1024));
        assert_eq!(t.shm_size, Some(8 << 20));
        assert_eq!(t.sysctls["kernel.shmmax"], "7777");
        assert_eq!(t.memory_swap, Some(-1));
        assert_eq!(t.memory_reservation, Some(32 << 20));
        assert_eq!(t.blkio_weight, Some(300));
        assert!(t.oom_kill_disable);
        assert_eq!((t.devices[0].major, t.devices[0].minor), (1, 3));
        assert_eq!(t.devices[0].container, "/dev/n");
        assert_eq!(o.gateway_hosts, ["gw"]);
        assert_eq!(o.add_hosts.len(), 1);
        for (json, needle) in [
            (r#"{"Sysctls":{"kernel.panic":"1"}}"#, "kernel.panic"),
            (
                r#"{"Ulimits":[{"Name":"bogus","Soft":1,"Hard":1}]}"#,
                "bogus",
            ),
            (
                r#"{"Devices":[{"PathOnHost":"/dev/capsa-none"}]}"#,
                "/dev/capsa-none",
            ),
            (r#"{"BlkioWeight":5}"#, "HostConfig.BlkioWeight"),
            (r#"{"CpuShares":1}"#, "HostConfig.CpuShares"),
            (r#"{"MemorySwap":134217728}"#, "Memory limit"),
            (r#"{"ShmSize":-1}"#, "ShmSize"),
        ] {
            let e = options(&format!(r#"{{"Image":"busybox","HostConfig":{json}}}"#)).unwrap_err();
            assert!(e.message.contains(needle), "{json}: {}", e.message);
        }
    }

    #[test]
    fn an_entrypoint_list_keeps_its_arguments_before_the_command() {
        let (o, _) =
            options(r#"{"Image":"busybox","Entrypoint":["sh","-c"],"Cmd":"echo hi"}"#).unwrap();
        assert_eq!(o.entrypoint.as_deref(), Some("sh"));
        assert_eq!(o.command, ["-c", "echo hi"]);
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        let e = options(r#"{"Image":"busybox","HostConfig":{"Memory":"lots"}}"#).unwrap_err();
        assert!(e.message.contains("HostConfig.Memory"), "{}", e.message);
        let e = options(r#"{"Image":"busybox","HostConfig":{"Runtime":"kata"}}"#).unwrap_err();
        assert_eq!(e.message, "unknown or invalid runtime name: kata");
        let e = options(r#"{"Image":"busybox","HostConfig":{"CapAdd":["NOPE"]}}"#).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        let e = options(r#"{"Cmd":["true"]}"#).unwrap_err();
        assert!(e.message.contains("Image"), "{}", e.message);
        let e = options(
            r#"{"Image":"busybox","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("Conflicting"), "{}", e.message);
    }
}
