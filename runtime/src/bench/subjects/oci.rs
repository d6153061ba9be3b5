//! An OCI runtime as a peer (runc, runsc): a generated bundle per instance whose root is an
//! overlay of the very layers capsa unpacked, so every subject runs the same files. The
//! bundle is made before timing starts, as containerd or CRI-O prepare one for the runtime.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicUsize;

use crate::bench::error::BenchError;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Mount, Spec};

use super::{
    cgroup_usage_file, instance_name, version_of, Instance, Knob, OneShot, Relaxation, Subject,
    SubjectInfo, Workload, PROBE_DIR_INSIDE,
};

pub struct OciPeer {
    info: SubjectInfo,
    binary: PathBuf,
    /// Flags before the verb (`runsc --network=none`).
    global: Vec<String>,
    /// Image layers, top first (overlay's lowerdir order).
    layers: Vec<PathBuf>,
    /// Where bundles are made.
    work: PathBuf,
    cgroup_parent: String,
    probe_dir: Option<PathBuf>,
    names: AtomicUsize,
}

impl OciPeer {
    /// `name` is `runc` or `runsc`; `layers` bottom first, as the image store lists them.
    pub fn new(
        name: &str,
        layers: &[PathBuf],
        work: &Path,
        cgroup_parent: Option<&str>,
        probe_dir: Option<PathBuf>,
    ) -> OciPeer {
        let binary = crate::host::which(name);
        let version = binary
            .as_ref()
            .map(|b| version_of(b, &["--version"]))
            .unwrap_or_default();
        let unavailable = binary.is_none().then(|| {
            let hint = if name == "runsc" {
                " (gVisor is not packaged by Debian 12; its own apt repository is not reachable from this machine)"
            } else {
                " (apt install runc)"
            };
            format!("{name}: not found in PATH{hint}")
        });
        let global = if name == "runsc" {
            vec!["--network=none".to_string()]
        } else {
            Vec::new()
        };
        OciPeer {
            info: SubjectInfo {
                name: name.into(),
                kind: "peer".into(),
                isolation: crate::container::sandbox::Isolation::Container,
                engine: name.into(),
                accelerator: None,
                version,
                unavailable,
                vm_start: None,
            },
            binary: binary.unwrap_or_else(|| PathBuf::from(name)),
            global,
            layers: layers.iter().rev().cloned().collect(),
            work: work.join(name),
            cgroup_parent: cgroup_parent
                .unwrap_or("capsa-bench")
                .trim_matches('/')
                .to_string(),
            probe_dir,
            names: AtomicUsize::new(0),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(&self.global);
        c
    }

    /// The instance's bundle: config.json and an overlay root over the image's layers.
    fn bundle(
        &self,
        id: &str,
        workload: &Workload,
        relax: Option<Relaxation>,
    ) -> Result<Bundle, BenchError> {
        let dir = self.work.join(id);
        let bundle = Bundle { dir: dir.clone() };
        for sub in ["rootfs", "upper", "work"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(BenchError::file(&path))?;
        }
        let lower: Vec<String> = self
            .layers
            .iter()
            .map(|l| l.display().to_string())
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &dir.join("rootfs"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| BenchError::Mount {
            what: format!("overlay for the {} bundle", self.info.name),
            source,
        })?;
        let mut spec = self.spec(id, &dir, workload)?;
        if let Some(r) = relax {
            relaxed(&mut spec, r);
        }
        let config = dir.join("config.json");
        spec.save(&config).map_err(|source| BenchError::Spec {
            path: config,
            source,
        })?;
        Ok(bundle)
    }

    fn spec(&self, id: &str, dir: &Path, workload: &Workload) -> Result<Spec, BenchError> {
        let mut spec = Spec::default();
        spec.set_hostname(Some("capsa-bench".into()));
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(workload.argv()));
            p.set_env(Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]));
        }
        if let Some(root) = spec.root_mut() {
            root.set_path(dir.join("rootfs"));
            root.set_readonly(Some(false));
        }
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/{}/{id}", self.cgroup_parent))));
        }
        if workload.needs_probe() {
            let probe = self.probe_dir.as_ref().ok_or(BenchError::NoProbe)?;
            let mut mounts = spec.mounts().clone().unwrap_or_default();
            let mut m = Mount::default();
            m.set_destination(PathBuf::from(PROBE_DIR_INSIDE));
            m.set_typ(Some("bind".into()));
            m.set_source(Some(probe.clone()));
            m.set_options(Some(vec!["rbind".into(), "ro".into()]));
            mounts.push(m);
            spec.set_mounts(Some(mounts));
        }
        Ok(spec)
    }
}

/// Removes layers from a runtime spec as `relax` says. oci-spec's default spec, what
/// `runc spec` writes, has no seccomp section, so there is none to remove.
fn relaxed(spec: &mut Spec, relax: Relaxation) {
    let knobs = relax.removes();
    if let Some(linux) = spec.linux_mut() {
        if knobs.contains(&Knob::Devices) {
            let mut allow_all = LinuxDeviceCgroup::default();
            allow_all.set_allow(true);
            allow_all.set_typ(Some(LinuxDeviceType::A));
            allow_all.set_access(Some("rwm".into()));
            let mut resources = linux.resources().clone().unwrap_or_default();
            resources.set_devices(Some(vec![allow_all]));
            linux.set_resources(Some(resources));
        }
        if knobs.contains(&Knob::Paths) {
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
        }
    }
    if knobs.contains(&Knob::Capabilities) {
        if let Some(process) = spec.process_mut().as_mut() {
            let all = crate::linux::capabilities::to_oci(&crate::linux::capabilities::all_caps());
            let mut caps = process.capabilities().clone().unwrap_or_default();
            caps.set_bounding(Some(all.clone()));
            caps.set_effective(Some(all.clone()));
            caps.set_permitted(Some(all));
            process.set_capabilities(Some(caps));
        }
    }
    if knobs.contains(&Knob::Paths) {
        if let Some(mounts) = spec.mounts_mut() {
            for m in mounts
                .iter_mut()
                .filter(|m| m.destination() == Path::new("/sys"))
            {
                let options: Vec<String> = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o != "ro")
                    .collect();
                m.set_options(Some(options));
            }
        }
    }
}

/// A bundle directory; dropping it unmounts its root and removes it.
struct Bundle {
    dir: PathBuf,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Subject for OciPeer {
    fn info(&self) -> &SubjectInfo {
        &self.info
    }

    fn one_shot(&self, workload: &Workload) -> Result<OneShot, BenchError> {
        let id = instance_name(&self.names);
        let bundle = self.bundle(&id, workload, None)?;
        let mut c = self.command();
        c.arg("run").arg("--bundle").arg(&bundle.dir).arg(&id);
        Ok(OneShot {
            command: c,
            cleanup: Some(Box::new(move || drop(bundle))),
            stderr_shows: None,
        })
    }

    fn start(&self, workload: &Workload, publish: Option<u16>) -> Result<Instance, BenchError> {
        if publish.is_some() {
            self.can_publish()?;
        }
        let id = instance_name(&self.names);
        let bundle = self.bundle(&id, workload, None)?;
        // The container inherits runc's stdio: a pipe would stay open as long as it runs,
        // so errors go to a file.
        let errors = bundle.dir.join("run.err");
        let err_file = std::fs::File::create(&errors).map_err(BenchError::file(&errors))?;
        let status = self
            .command()
            .arg("run")
            .arg("-d")
            .arg("--bundle")
            .arg(&bundle.dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .status()
            .map_err(BenchError::command(format!("{} run -d", self.info.name)))?;
        if !status.success() {
            return Err(BenchError::Refused {
                command: format!("{} run -d", self.info.name),
                stderr: std::fs::read_to_string(&errors)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            });
        }
        let state = self
            .command()
            .args(["state", &id])
            .output()
            .map_err(BenchError::command(format!("{} state", self.info.name)))?;
        let pid = serde_json::from_slice::<serde_json::Value>(&state.stdout)
            .ok()
            .and_then(|v| v.get("pid")?.as_i64())
            .ok_or_else(|| BenchError::NoPid {
                subject: self.info.name.clone(),
                id: id.clone(),
            })?;
        Ok(Instance {
            id: id.clone(),
            roots: vec![pid as i32],
            cgroup_memory: Some(cgroup_usage_file(&format!("{}/{id}", self.cgroup_parent))),
            guest_mib: None,
            child: None,
            cleanup: Some(Box::new(move || drop(bundle))),
        })
    }

    fn remove(&self, instance: Instance) {
        let _ = self
            .command()
            .args(["delete", "-f", &instance.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(cleanup) = instance.cleanup {
            cleanup();
        }
    }

    fn relaxations(&self) -> Vec<(Relaxation, String)> {
        vec![
            (
                Relaxation::Capabilities,
                "every capability in the spec".into(),
            ),
            (
                Relaxation::Devices,
                "a device rule allowing every device (linux.resources.devices)".into(),
            ),
            (
                Relaxation::CapabilitiesAndDevices,
                "every capability and every device".into(),
            ),
            (
                Relaxation::Privileged,
                "every capability and device, no masked or read-only paths, /sys writable".into(),
            ),
        ]
    }

    fn one_shot_relaxed(
        &self,
        workload: &Workload,
        relax: Relaxation,
    ) -> Result<OneShot, BenchError> {
        if relax.removes().contains(&Knob::Seccomp) && relax != Relaxation::Privileged {
            return Err(BenchError::NoSeccompFilter(self.info.name.clone()));
        }
        let id = instance_name(&self.names);
        let bundle = self.bundle(&id, workload, Some(relax))?;
        let mut c = self.command();
        c.arg("run").arg("--bundle").arg(&bundle.dir).arg(&id);
        Ok(OneShot {
            command: c,
            cleanup: Some(Box::new(move || drop(bundle))),
            stderr_shows: None,
        })
    }

    fn can_exec(&self) -> bool {
        true
    }

    fn exec(&self, instance: &Instance, argv: &[String]) -> Result<Command, BenchError> {
        let mut c = self.command();
        c.arg("exec").arg(&instance.id).args(argv);
        Ok(c)
    }

    fn records(&self, instance: &Instance) -> Vec<PathBuf> {
        // runc's own state (its default --root), which holds the whole config.
        [PathBuf::from("/run")
            .join(&self.info.name)
            .join(&instance.id)
            .join("state.json")]
        .into_iter()
        .filter(|p| p.exists())
        .collect()
    }

    fn can_publish(&self) -> Result<(), BenchError> {
        Err(BenchError::CannotPublish {
            reason: format!(
                "{} sets up no network of its own (a CNI plugin would): no published port to measure through",
                self.info.name
            ),
        })
    }
}
