//! capsa itself, in either isolation: this binary's own `run`, as a user types it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicUsize;

use super::{
    instance_name, Instance, OneShot, Relaxation, Subject, SubjectInfo, Workload, COLD_BOOT,
    FROM_TEMPLATE, PROBE_DIR_INSIDE, PROBE_PORT,
};
use crate::bench::error::BenchError;
use crate::container::store::ContainerStore;
use crate::root::StateRoot;

pub struct CapsaSubject {
    info: SubjectInfo,
    exe: PathBuf,
    root: StateRoot,
    image: String,
    /// `--isolation vm` and the forced engine, or None for containers.
    vm: Option<Option<String>>,
    /// A VM that must start from the VM template (else it boots cold).
    from_template: bool,
    cgroup_parent: Option<String>,
    probe_dir: Option<PathBuf>,
    names: AtomicUsize,
}

impl CapsaSubject {
    pub fn container(
        root: StateRoot,
        image: &str,
        cgroup_parent: Option<String>,
        probe_dir: Option<PathBuf>,
    ) -> CapsaSubject {
        let info = SubjectInfo {
            name: "capsa-container".into(),
            kind: "capsa".into(),
            isolation: crate::container::sandbox::Isolation::Container,
            engine: "capsa".into(),
            accelerator: None,
            version: format!("capsa {}", env!("CARGO_PKG_VERSION")),
            unavailable: crate::linux::cgroups::CgroupMode::detect()
                .is_none()
                .then(|| "no cgroup file system at /sys/fs/cgroup".to_string()),
            vm_start: None,
        };
        Self::new(info, root, image, None, cgroup_parent, probe_dir)
    }

    /// capsa's VM isolation; `from_template`: each VM starts from the VM template (built
    /// here first, as `capsa system vm-template warm` does), else boots cold
    /// (`CAPSA_VM_TEMPLATE=off`). Only QEMU has templates.
    pub fn vm(
        root: StateRoot,
        image: &str,
        vmm: Option<String>,
        from_template: bool,
        cgroup_parent: Option<String>,
        probe_dir: Option<PathBuf>,
    ) -> CapsaSubject {
        let mut info = SubjectInfo {
            name: if from_template {
                "capsa-vm"
            } else {
                "capsa-vm-cold"
            }
            .into(),
            kind: "capsa".into(),
            isolation: crate::container::sandbox::Isolation::Vm,
            engine: vmm.clone().unwrap_or_else(|| "?".into()),
            accelerator: None,
            version: format!("capsa {}", env!("CARGO_PKG_VERSION")),
            unavailable: None,
            vm_start: Some(
                if from_template {
                    FROM_TEMPLATE
                } else {
                    COLD_BOOT
                }
                .into(),
            ),
        };
        match crate::vm::engine::select(vmm.as_deref()) {
            Ok((engine, _)) => {
                info.engine = engine.name().into();
                info.accelerator = Some(engine.accelerator().into());
                info.version = format!("{}; {}", info.version, engine.version());
            }
            Err(e) => info.unavailable = Some(e.to_string()),
        }
        if info.unavailable.is_none() {
            if let Err(e) = crate::vm::artifacts::locate(&root) {
                info.unavailable = Some(e.to_string());
            }
        }
        let mut s = Self::new(info, root, image, Some(vmm), cgroup_parent, probe_dir);
        s.from_template = from_template;
        if from_template && s.info.unavailable.is_none() {
            if let Err(why) = s.warm_template() {
                s.info.unavailable = Some(why);
            }
        }
        s
    }

    /// Builds the VM template now, so no timed start pays for it: Err says why no VM
    /// of this subject can start from it.
    fn warm_template(&self) -> Result<(), String> {
        if self.info.engine != "qemu" {
            return Err(format!(
                "VM templates need QEMU; this host's VM engine is {}",
                self.info.engine
            ));
        }
        let out = self
            .capsa()
            .args(["system", "vm-template", "warm"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("capsa system vm-template warm: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "capsa system vm-template warm: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn new(
        info: SubjectInfo,
        root: StateRoot,
        image: &str,
        vm: Option<Option<String>>,
        cgroup_parent: Option<String>,
        probe_dir: Option<PathBuf>,
    ) -> CapsaSubject {
        CapsaSubject {
            info,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("capsa")),
            root,
            image: image.to_string(),
            vm,
            from_template: false,
            cgroup_parent,
            probe_dir,
            names: AtomicUsize::new(0),
        }
    }

    fn capsa(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--root").arg(self.root.dir());
        if self.vm.is_some() {
            // The template VM logs its restore, so a run that booted cold is caught.
            c.env(
                "CAPSA_VM_TEMPLATE",
                if self.from_template { "on" } else { "off" },
            );
            if self.from_template {
                c.args(["--log-level", "info"]);
            }
        }
        c
    }

    /// `capsa run` with this subject's isolation and the workload's needs.
    fn run(&self, workload: &Workload, flags: &[&str]) -> Result<Command, BenchError> {
        self.command("run", workload, flags)
    }

    /// `capsa VERB` (run or create) with this subject's isolation and the workload's needs.
    fn command(
        &self,
        verb: &str,
        workload: &Workload,
        flags: &[&str],
    ) -> Result<Command, BenchError> {
        let mut c = self.capsa();
        c.arg(verb).args(flags);
        if let Some(parent) = &self.cgroup_parent {
            c.args(["--cgroup-parent", parent]);
        }
        if let Some(vmm) = &self.vm {
            c.args(["--isolation", "vm"]);
            if let Some(v) = vmm {
                c.args(["--vmm", v]);
            }
        }
        if workload.needs_probe() {
            let dir = self.probe_dir.as_ref().ok_or(BenchError::NoProbe)?;
            c.arg("-v")
                .arg(format!("{}:{PROBE_DIR_INSIDE}:ro", dir.display()));
        }
        c.arg(&self.image).args(workload.argv());
        Ok(c)
    }
}

impl Subject for CapsaSubject {
    fn info(&self) -> &SubjectInfo {
        &self.info
    }

    fn one_shot(&self, workload: &Workload) -> Result<OneShot, BenchError> {
        let mut shot = OneShot::plain(self.run(workload, &["--rm", "--network", "none"])?);
        if self.from_template {
            shot.stderr_shows = Some(RESTORED_LINE);
        }
        Ok(shot)
    }

    fn start(&self, workload: &Workload, publish: Option<u16>) -> Result<Instance, BenchError> {
        let name = instance_name(&self.names);
        let port = publish.map(|p| format!("127.0.0.1:{p}:{PROBE_PORT}"));
        let mut flags = vec!["-d", "--name", &name];
        match &port {
            Some(p) => flags.extend(["-p", p.as_str()]),
            None => flags.extend(["--network", "none"]),
        }
        let out = self
            .run(workload, &flags)?
            .stdin(Stdio::null())
            .output()
            .map_err(BenchError::command("capsa run -d"))?;
        if !out.status.success() {
            return Err(BenchError::Refused {
                command: "capsa run -d".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let store = ContainerStore::new(&self.root);
        let state = store.observe(&id)?;
        if self.from_template && !restored(&store, &id) {
            let _ = self.capsa().args(["rm", "-f", &id]).output();
            return Err(BenchError::NotFromTemplate(format!(
                "container {id}'s engine record names no template"
            )));
        }
        // A VM container's pid is its monitor's.
        let mut roots: Vec<i32> = [state.monitor_pid, state.pid]
            .into_iter()
            .flatten()
            .collect();
        roots.dedup();
        let cgroup_memory = state
            .cgroup
            .dirs
            .get("memory")
            .or_else(|| state.cgroup.dirs.get("unified"))
            .map(|d| memory_usage_file(d));
        Ok(Instance {
            id,
            roots,
            cgroup_memory,
            guest_mib: self.vm.as_ref().map(|_| crate::vm::run::DEFAULT_GUEST_MIB),
            child: None,
            cleanup: None,
        })
    }

    fn relaxations(&self) -> Vec<(Relaxation, String)> {
        let mut r = vec![
            (
                Relaxation::Seccomp,
                "--security-opt seccomp=unconfined".to_string(),
            ),
            (Relaxation::Capabilities, "--cap-add ALL".to_string()),
            (
                Relaxation::SeccompAndCapabilities,
                "--security-opt seccomp=unconfined --cap-add ALL".to_string(),
            ),
        ];
        if self.vm.is_none() && std::path::Path::new(V1_DEVICES).is_dir() {
            r.push((
                Relaxation::Devices,
                "`a` written to the container's devices.allow (cgroup v1) between create and start"
                    .to_string(),
            ));
        }
        r.push((Relaxation::Privileged, "--privileged".to_string()));
        r
    }

    fn one_shot_relaxed(
        &self,
        workload: &Workload,
        relax: Relaxation,
    ) -> Result<OneShot, BenchError> {
        let flags: &[&str] = match relax {
            Relaxation::Seccomp => &["--security-opt", "seccomp=unconfined"],
            Relaxation::Capabilities => &["--cap-add", "ALL"],
            Relaxation::SeccompAndCapabilities => {
                &["--security-opt", "seccomp=unconfined", "--cap-add", "ALL"]
            }
            Relaxation::Privileged => &["--privileged"],
            Relaxation::Devices if self.vm.is_none() => return self.with_all_devices(workload),
            _ => {
                return Err(BenchError::CannotRelax {
                    subject: self.info.name.clone(),
                    relaxation: relax.describe(),
                })
            }
        };
        let mut all = vec!["--rm", "--network", "none"];
        all.extend_from_slice(flags);
        Ok(OneShot::plain(self.run(workload, &all)?))
    }

    fn can_exec(&self) -> bool {
        true
    }

    fn exec(&self, instance: &Instance, argv: &[String]) -> Result<Command, BenchError> {
        let mut c = self.capsa();
        c.arg("exec").arg(&instance.id).args(argv);
        Ok(c)
    }

    fn records(&self, instance: &Instance) -> Vec<PathBuf> {
        let dir = ContainerStore::new(&self.root).dir(&instance.id);
        [dir.config(), dir.state(), dir.upper(), dir.log()]
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    }

    fn remove(&self, instance: Instance) {
        let _ = self
            .capsa()
            .args(["rm", "-f", &instance.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What `capsa --log-level info run --isolation vm` logs when its VM was restored from the
/// template (bench/vm_template.py reads it too).
const RESTORED_LINE: &str = "vm restored from template";

/// Whether the running VM container `id` was restored from a template (its engine record
/// says so; a VM started with `run -d` is booted by its monitor, whose log is not ours).
fn restored(store: &ContainerStore, id: &str) -> bool {
    crate::vm::run::engine_record(store, id).is_some_and(|r| r.template.is_some())
}

/// Where cgroup v1 keeps the devices controller.
const V1_DEVICES: &str = "/sys/fs/cgroup/devices";

impl CapsaSubject {
    /// A created container whose v1 device cgroup is opened to every device before it
    /// starts: the default configuration with only the device rules removed.
    fn with_all_devices(&self, workload: &Workload) -> Result<OneShot, BenchError> {
        let name = instance_name(&self.names);
        let out = self
            .command("create", workload, &["--name", &name, "--network", "none"])?
            .stdin(Stdio::null())
            .output()
            .map_err(BenchError::command("capsa create"))?;
        if !out.status.success() {
            return Err(BenchError::Refused {
                command: "capsa create".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut remove = {
            let mut rm = self.capsa();
            rm.args(["rm", "-f", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            move || {
                let _ = rm.status();
            }
        };
        let widened = ContainerStore::new(&self.root)
            .observe(&id)
            .map_err(BenchError::from)
            .and_then(|state| {
                let allow = state
                    .cgroup
                    .dirs
                    .get("devices")
                    .ok_or(BenchError::NoDevicesCgroup)?
                    .join("devices.allow");
                std::fs::write(&allow, "a").map_err(BenchError::file(&allow))
            });
        if let Err(e) = widened {
            remove();
            return Err(e);
        }
        let mut start = self.capsa();
        start.args(["start", "-a", &id]);
        Ok(OneShot {
            command: start,
            cleanup: Some(Box::new(remove)),
            stderr_shows: None,
        })
    }
}

/// The memory usage file inside a cgroup directory of either version.
fn memory_usage_file(dir: &std::path::Path) -> PathBuf {
    let v1 = dir.join("memory.usage_in_bytes");
    if v1.exists() {
        v1
    } else {
        dir.join("memory.current")
    }
}
