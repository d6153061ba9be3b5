//! A containerd of the test's own with its CRI plugin on, spoken to as the kubelet speaks to
//! it (CRI v1 over its unix socket, with the `k8s-cri` bindings on tonic), and the images
//! its pods use in a local registry. Shared by the CRI tests (`tests/cri.rs`) and the CRI
//! benchmark (`examples/cri_bench.rs`).
//!
//! Everything containerd owns lives under one temporary directory: its root and state, its
//! sockets, the runc v2 shim's runtime roots, the CNI configuration and IPAM records, the
//! pods' log directories. containerd runs inside the test's network namespace (a
//! `TestEnv`'s), so the CNI bridge, the pods' veths and every packet stay there.

#![allow(dead_code)] // each of the test and the benchmark uses part of it

pub mod streaming;

use capsa_tests::registry::{LocalRegistry, OciLayout, Packing};
use capsa_tests::{busybox_tarball, capsa_bin, eventually, TestEnv};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one CRI call may take (a pull, a sandbox's start on a loaded machine).
pub const BOUND: Duration = Duration::from_secs(60);

/// The CNI bridge in the test's network namespace (each test has its own namespace, so
/// the name only has to differ from capsa's own bridge, capsa0).
pub const BRIDGE: &str = "cricapsa0";

/// The pods' subnet on that bridge (no route leaves the test's namespace).
pub const SUBNET: &str = "10.213.0.0/24";

/// The pause entrypoint of the test's sandbox image: waits for signals as PID 1 and exits
/// on TERM (a plain `sleep` as PID 1 would ignore TERM: it has no handler).
const PAUSE: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done";

/// The images pods use: busybox and a pause image built from it, in a local registry.
pub struct Images {
    pub registry: LocalRegistry,
}

impl Images {
    /// Starts a registry in `env`'s network namespace and pushes `busybox:1` and
    /// `pause:1` (busybox with [`PAUSE`] as its entrypoint).
    pub fn push(env: &TestEnv) -> Images {
        let registry = LocalRegistry::start(env);
        let mut layout = OciLayout::new();
        let tar = std::fs::read(busybox_tarball()).unwrap();
        let layer = layout.layer(&tar, Packing::Gzip);
        let busybox = layout.image(
            "amd64",
            std::slice::from_ref(&layer),
            serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
        );
        layout.tag("busybox", busybox);
        let pause = layout.image(
            "amd64",
            &[layer],
            serde_json::json!({"Entrypoint": ["sh", "-c", PAUSE], "Env": ["PATH=/bin"]}),
        );
        layout.tag("pause", pause);
        registry.push(&layout, "busybox", "busybox");
        registry.push(&layout, "pause", "pause");
        Images { registry }
    }

    pub fn busybox(&self) -> String {
        format!("{}/busybox:busybox", self.registry.host())
    }

    pub fn pause(&self) -> String {
        format!("{}/pause:pause", self.registry.host())
    }
}

/// A containerd with the CRI plugin, handlers `capsa` (capsa-runc through the runc v2 shim)
/// and `runc`, in the network namespace of a test.
pub struct CriContainerd {
    pub dir: tempfile::TempDir,
    daemon: Child,
    pub rt: tokio::runtime::Runtime,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// The cgroup every pod of the test goes under (created and removed by the test, as
    /// the kubelet makes its kubepods hierarchy).
    pub cgroup_root: String,
    /// The network namespace containerd runs in (its streaming server listens there).
    pub netns: String,
}

/// The runtime handlers this containerd knows.
pub const HANDLERS: [&str; 3] = ["capsa", "capsa-vm", "runc"];

impl CriContainerd {
    /// Starts containerd in `env`'s network namespace, pulling sandboxes from `images`.
    pub fn start(env: &TestEnv, images: &Images) -> CriContainerd {
        let dir = tempfile::Builder::new()
            .prefix("capsa-cri-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::os::unix::fs::symlink(capsa_bin(), d.join("capsa-runc")).unwrap();
        std::os::unix::fs::symlink(capsa_bin(), d.join("capsa-vm")).unwrap();
        write_cni_config(d);
        std::fs::write(d.join("config.toml"), containerd_config(d, images)).unwrap();
        let daemon = env
            .host_command("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            // capsa-vm's pod disks and VM templates: the test's, removed with it.
            .env("CAPSA_VM_STATE", d.join("capsa-vm-state"))
            .stdout(File::create(d.join("containerd.log")).unwrap())
            .stderr(File::create(d.join("containerd.err")).unwrap())
            .spawn()
            .expect("containerd (scripts/setup.sh installs it)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = d.join("ctd.sock");
        // The socket file appears at bind, a moment before containerd listens on it.
        let mut channel = None;
        eventually("containerd listening on its socket", BOUND, || {
            channel = rt.block_on(connect(socket.clone())).ok();
            channel.is_some()
        });
        let channel = channel.expect("connected");
        let tag = d.file_name().unwrap().to_string_lossy().replace('.', "");
        let ctd = CriContainerd {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            rt,
            daemon,
            cgroup_root: format!("/{tag}"),
            netns: env.netns().to_string(),
            dir,
        };
        ctd.wait_network_ready();
        ctd
    }

    /// Waits until the CRI plugin reports its runtime and network ready (the CNI config
    /// loaded), as the kubelet does before it runs pods.
    fn wait_network_ready(&self) {
        eventually("CRI RuntimeReady and NetworkReady", BOUND, || {
            let mut c = self.runtime.clone();
            let Ok(status) = self.call(c.status(StatusRequest { verbose: false })) else {
                return false;
            };
            let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
            conditions.len() >= 2 && conditions.iter().all(|c| c.status)
        });
    }

    /// containerd's PID.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.id()
    }

    /// Runs one CRI call to completion (bounded).
    pub fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.rt.block_on(async {
            match tokio::time::timeout(BOUND, fut).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded("CRI call timed out")),
            }
        })
    }

    /// The runc v2 shim's runtime root of `handler` (capsa-runc's or runc's `--root` is
    /// `<this>/k8s.io`).
    pub fn runtime_root(&self, handler: &str) -> PathBuf {
        self.dir.path().join(format!("{handler}-root"))
    }

    pub fn capsa_runc(&self) -> PathBuf {
        self.dir.path().join("capsa-runc")
    }

    /// The pod sandbox config the kubelet would send for pod `name`: its own log directory,
    /// cgroup parent under the test's, hostname, DNS, a namespaced sysctl, RuntimeDefault
    /// seccomp and the CRI default namespaces (network and IPC per pod).
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = format!("uid-{name}");
        let log_directory = self
            .dir
            .path()
            .join("pods")
            .join(format!("default_{name}_{uid}"));
        std::fs::create_dir_all(&log_directory).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.to_string_lossy().into(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.213.0.53".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", self.cgroup_root),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    seccomp: Some(runtime_default()),
                    ..Default::default()
                }),
                sysctls: HashMap::from([(
                    "net.ipv4.ip_unprivileged_port_start".to_string(),
                    "0".to_string(),
                )]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `handler`; the sandbox's ID.
    pub fn run_pod(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        let mut c = self.runtime.clone();
        self.call(c.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        }))
        .map(|r| r.pod_sandbox_id)
    }

    /// PullImage of `image` for the pod `config`; the image's reference.
    pub fn pull(&self, image: &str, config: &PodSandboxConfig) -> String {
        let mut c = self.images.clone();
        self.call(c.pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: Some(config.clone()),
        }))
        .unwrap_or_else(|e| panic!("PullImage {image}: {e}"))
        .image_ref
    }

    /// CreateContainer `name` running `args` from `image` in pod `pod`, logging to
    /// `<log_directory>/<name>.log`, with what the kubelet sends for an unprivileged
    /// container (RuntimeDefault seccomp, its masked and read-only /proc paths); its ID.
    pub fn create_container(
        &self,
        pod: &str,
        config: &PodSandboxConfig,
        name: &str,
        image: &str,
        args: &[&str],
    ) -> String {
        self.create_container_with(pod, config, name, image, args, |_| {})
    }

    /// [`create_container`](Self::create_container) with the container's Linux config
    /// (security context, resources) changed by `edit`.
    pub fn create_container_with(
        &self,
        pod: &str,
        config: &PodSandboxConfig,
        name: &str,
        image: &str,
        args: &[&str],
        edit: impl FnOnce(&mut LinuxContainerConfig),
    ) -> String {
        let words = |w: &[&str]| w.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let security = LinuxContainerSecurityContext {
            namespace_options: config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.clone()),
            seccomp: Some(runtime_default()),
            masked_paths: words(&KUBELET_MASKED_PATHS),
            readonly_paths: words(&KUBELET_READONLY_PATHS),
            ..Default::default()
        };
        let mut linux = LinuxContainerConfig {
            security_context: Some(security),
            ..Default::default()
        };
        edit(&mut linux);
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: words(args),
            log_path: format!("{name}.log"),
            linux: Some(linux),
            ..Default::default()
        };
        let mut c = self.runtime.clone();
        self.call(c.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(container),
            sandbox_config: Some(config.clone()),
        }))
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
        .container_id
    }

    pub fn start_container(&self, id: &str) {
        let mut c = self.runtime.clone();
        self.call(c.start_container(StartContainerRequest {
            container_id: id.into(),
        }))
        .unwrap_or_else(|e| panic!("StartContainer {id}: {e}"));
    }

    /// ContainerStatus (verbose: its `info` carries the init's PID).
    pub fn container_status(&self, id: &str) -> ContainerStatusResponse {
        let mut c = self.runtime.clone();
        self.call(c.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        }))
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
    }

    /// The container's state, exit code and reason.
    pub fn container_state(&self, id: &str) -> (ContainerState, i32, String) {
        let s = self.container_status(id).status.expect("a status");
        (s.state(), s.exit_code, s.reason)
    }

    /// PodSandboxStatus (verbose: its `info` carries the sandbox's PID and spec).
    pub fn pod_status(&self, id: &str) -> PodSandboxStatusResponse {
        let mut c = self.runtime.clone();
        self.call(c.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        }))
        .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}"))
    }

    /// ExecSync `cmd` in container `id`: (stdout, stderr, exit code).
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> (String, String, i32) {
        let mut c = self.runtime.clone();
        let r = self
            .call(c.exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|a| a.to_string()).collect(),
                timeout: BOUND.as_secs() as i64,
            }))
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e}"));
        (
            String::from_utf8_lossy(&r.stdout).into(),
            String::from_utf8_lossy(&r.stderr).into(),
            r.exit_code,
        )
    }

    /// Exec as `kubectl exec` (and `crictl exec`) runs it: CRI's Exec answers with a URL of
    /// containerd's streaming server, spoken to over WebSocket (see [`streaming`]).
    pub fn exec_streaming(
        &self,
        id: &str,
        cmd: &[&str],
        tty: bool,
        input: Option<&[u8]>,
    ) -> streaming::Streamed {
        let mut c = self.runtime.clone();
        let url = self
            .call(c.exec(ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|a| a.to_string()).collect(),
                tty,
                stdin: input.is_some(),
                stdout: true,
                // With a terminal both streams are the terminal's.
                stderr: !tty,
            }))
            .unwrap_or_else(|e| panic!("Exec {cmd:?} in {id}: {e}"))
            .url;
        streaming::exec(&self.netns, &url, input)
    }

    /// UpdateContainerResources (the kubelet's in-place resize).
    pub fn update_resources(&self, id: &str, linux: LinuxContainerResources) {
        let mut c = self.runtime.clone();
        self.call(
            c.update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.into(),
                linux: Some(linux),
                ..Default::default()
            }),
        )
        .unwrap_or_else(|e| panic!("UpdateContainerResources {id}: {e}"));
    }

    pub fn stop_container(&self, id: &str, timeout: i64) {
        let mut c = self.runtime.clone();
        self.call(c.stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        }))
        .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.runtime.clone();
        self.call(c.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(drop)
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.runtime.clone();
        self.call(c.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(drop)
    }

    /// The IDs of the pods containerd knows.
    pub fn pods(&self) -> Vec<String> {
        let mut c = self.runtime.clone();
        self.call(c.list_pod_sandbox(ListPodSandboxRequest { filter: None }))
            .map(|r| r.items.into_iter().map(|p| p.id).collect())
            .unwrap_or_default()
    }

    /// The IDs of the containers containerd knows.
    pub fn containers(&self) -> Vec<String> {
        let mut c = self.runtime.clone();
        self.call(c.list_containers(ListContainersRequest { filter: None }))
            .map(|r| r.containers.into_iter().map(|c| c.id).collect())
            .unwrap_or_default()
    }

    /// The container log file of container `name` in pod `config`, as the kubelet finds it.
    pub fn log_file(&self, config: &PodSandboxConfig, name: &str) -> PathBuf {
        Path::new(&config.log_directory).join(format!("{name}.log"))
    }
}

/// The /proc paths the kubelet masks in every unprivileged container (procMount Default).
const KUBELET_MASKED_PATHS: [&str; 10] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// The /proc paths the kubelet makes read-only in every unprivileged container.
const KUBELET_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A RuntimeDefault seccomp profile (the kubelet's `seccompProfile: RuntimeDefault`).
fn runtime_default() -> SecurityProfile {
    SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("containerd.err"));
            let log = log.unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("containerd's log, last lines:");
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
        }
        // A test that failed midway leaves pods: each is stopped and removed (its
        // containers with it, its shim then exits), then containerd is stopped.
        for pod in self.pods() {
            let _ = self.stop_pod(&pod);
            let _ = self.remove_pod(&pod);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        for handler in HANDLERS {
            let root = self.runtime_root(handler).join("k8s.io");
            let binary = match handler {
                "capsa" => self.capsa_runc(),
                "capsa-vm" => self.dir.path().join("capsa-vm"),
                _ => PathBuf::from("runc"),
            };
            let list = Command::new(&binary)
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .stderr(Stdio::null())
                .output();
            for id in list
                .map(|o| o.stdout)
                .unwrap_or_default()
                .split(|b| *b == b'\n')
            {
                let id = String::from_utf8_lossy(id);
                if !id.is_empty() {
                    let _ = Command::new(&binary)
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force", &id])
                        .output();
                }
            }
        }
        // What is left after that (a test that failed before removing its pods, a
        // containerd that could not): the shims it started, then the mounts under its
        // directory, deepest first.
        let dir = self.dir.path().to_string_lossy().to_string();
        for pid in shims_of(&dir) {
            // SAFETY: kill(2) on a shim started by this test's containerd.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .map(String::from)
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
        remove_cgroup_tree(&self.cgroup_root);
    }
}

/// The runc v2 shims serving the containerd whose directory is `dir`.
fn shims_of(dir: &str) -> Vec<i32> {
    let address = format!("{dir}/ctd.sock");
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| {
                            let words: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                            words
                                .first()
                                .is_some_and(|w| w.ends_with(b"containerd-shim-runc-v2"))
                                && words.contains(&address.as_bytes())
                        })
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the (empty) cgroup directories under `parent`, deepest first, in every
/// hierarchy.
pub fn remove_cgroup_tree(parent: &str) {
    for dir in cgroup_dirs(parent) {
        remove_dirs_depth_first(&dir);
    }
}

fn remove_dirs_depth_first(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_dirs_depth_first(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// `parent` in each cgroup hierarchy where it exists (v2: the one).
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel)]
            .into_iter()
            .filter(|p| p.exists())
            .collect();
    }
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join(rel))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Connects a tonic channel to a unix socket (the kubelet's `unix://` endpoint).
async fn connect(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// containerd's config: everything under `d`, the CRI plugin with the `capsa` and `runc`
/// handlers on the runc v2 shim, the pause image from the test's registry (plain HTTP on
/// 127.0.0.1), CNI from Debian's plugins with the conflist in `d/cni`. The OOM score of
/// the sandbox (-998) is kept no lower than containerd's own: lowering it needs
/// CAP_SYS_RESOURCE, which machines like CI's lack (runc then fails to create a sandbox).
fn containerd_config(d: &Path, images: &Images) -> String {
    let d = d.display();
    let registry = images.registry.host();
    let pause = images.pause();
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/ctd.sock"
[ttrpc]
  address = "{d}/ctd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[{cri}]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
    max_conf_num = 1
  [{cri}.containerd]
    default_runtime_name = "capsa"
    [{cri}.containerd.runtimes.capsa]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.capsa.options]
        BinaryName = "{d}/capsa-runc"
        Root = "{d}/capsa-root"
        SystemdCgroup = false
    [{cri}.containerd.runtimes.capsa-vm]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.capsa-vm.options]
        BinaryName = "{d}/capsa-vm"
        Root = "{d}/capsa-vm-root"
        SystemdCgroup = false
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "runc"
        Root = "{d}/runc-root"
        SystemdCgroup = false
  [{cri}.registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#
    )
}

/// The pods' network: Debian's bridge plugin on [`BRIDGE`] with host-local IPAM keeping
/// its records under `d`, plus loopback.
fn write_cni_config(d: &Path) {
    let conf = d.join("cni");
    std::fs::create_dir_all(&conf).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "capsa-cri-test",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": SUBNET}]],
                "dataDir": d.join("ipam"),
            },
        }],
    });
    std::fs::write(
        conf.join("10-capsa-cri-test.conflist"),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
}
