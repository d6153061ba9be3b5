//! Bare QEMU as a peer: `qemu-system-x86_64 -M microvm` booting our kernel with the image's
//! root as its initramfs and a shell script as /init that runs the workload and powers off.
//! No agent, no disks, no isolation inside: what a VM costs before capsa adds anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::bench::error::BenchError;

use super::{version_of, Instance, OneShot, Subject, SubjectInfo, Workload, PROBE_DIR_INSIDE};

/// Guest memory of the peer's VMs: what capsa gives a VM without `-m`.
const GUEST_MIB: u64 = crate::vm::run::DEFAULT_GUEST_MIB;

pub struct QemuPeer {
    info: SubjectInfo,
    binary: PathBuf,
    kvm: bool,
    kernel: PathBuf,
    /// Image layers, top first.
    layers: Vec<PathBuf>,
    work: PathBuf,
    /// The staged probe directory (both probes), copied into the initramfs.
    probe_dir: Option<PathBuf>,
    /// Built initramfs per workload.
    initramfs: Mutex<HashMap<String, PathBuf>>,
}

impl QemuPeer {
    pub fn new(
        root: &crate::root::StateRoot,
        layers: &[PathBuf],
        work: &Path,
        probe_dir: Option<PathBuf>,
    ) -> QemuPeer {
        let binary = crate::vm::engine::qemu_binary();
        let kernel = crate::vm::artifacts::kernel(root);
        let kvm = crate::vm::engine::hardware_virtualization();
        let unavailable = match (&binary, &kernel) {
            (None, _) => {
                Some("qemu-system-x86_64: not installed (apt install qemu-system-x86)".into())
            }
            (_, Err(e)) => Some(e.to_string()),
            _ => None,
        };
        QemuPeer {
            info: SubjectInfo {
                name: "qemu".into(),
                kind: "peer".into(),
                isolation: crate::container::sandbox::Isolation::Vm,
                engine: "qemu".into(),
                accelerator: Some(if kvm { "kvm" } else { "tcg" }.into()),
                version: binary
                    .as_ref()
                    .map(|b| version_of(b, &["--version"]))
                    .unwrap_or_default(),
                unavailable,
                vm_start: None,
            },
            binary: binary.unwrap_or_else(|| PathBuf::from("qemu-system-x86_64")),
            kvm,
            kernel: kernel.unwrap_or_default(),
            layers: layers.iter().rev().cloned().collect(),
            work: work.join("qemu"),
            probe_dir,
            initramfs: Mutex::new(HashMap::new()),
        }
    }

    /// The initramfs that runs `workload`: built once per workload.
    fn initramfs(&self, workload: &Workload) -> Result<PathBuf, BenchError> {
        let key = workload.argv().join(" ");
        let mut built = self.initramfs.lock().map_err(|_| BenchError::Poisoned)?;
        if let Some(p) = built.get(&key) {
            return Ok(p.clone());
        }
        let path = self.work.join(format!("initramfs-{}.cpio", built.len()));
        std::fs::create_dir_all(&self.work).map_err(BenchError::file(&self.work))?;
        let archive = self.archive(workload)?;
        std::fs::write(&path, archive).map_err(BenchError::file(&path))?;
        built.insert(key, path.clone());
        Ok(path)
    }

    fn archive(&self, workload: &Workload) -> Result<Vec<u8>, BenchError> {
        let merged = self.work.join("rootfs");
        std::fs::create_dir_all(&merged).map_err(BenchError::file(&merged))?;
        let lower: Vec<String> = self
            .layers
            .iter()
            .map(|l| l.display().to_string())
            .collect();
        // Read-only overlay (two lower dirs at least; a single layer is bind-mounted).
        let result = if lower.len() > 1 {
            nix::mount::mount(
                Some("overlay"),
                &merged,
                Some("overlay"),
                nix::mount::MsFlags::MS_RDONLY,
                Some(format!("lowerdir={}", lower.join(":")).as_str()),
            )
        } else {
            nix::mount::mount(
                Some(self.layers[0].as_path()),
                &merged,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(|source| BenchError::Mount {
            what: "the image root for the qemu peer".into(),
            source,
        })?;
        let mut archive = crate::vm::cpio::Newc::default();
        let tree = archive.tree(&merged);
        let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
        tree.map_err(BenchError::ImageRoot)?;
        for d in ["dev", "proc", "sys", "tmp"] {
            archive.dir(d, 0o755);
        }
        archive.char_device("dev/console", 0o600, 5, 1);
        if workload.needs_probe() {
            let dir = self.probe_dir.as_ref().ok_or(BenchError::NoProbe)?;
            let inside = PROBE_DIR_INSIDE.trim_start_matches('/');
            archive.dir(inside, 0o755);
            let entries = std::fs::read_dir(dir).map_err(BenchError::file(dir))?;
            for entry in entries.flatten().filter(|e| e.path().is_file()) {
                let path = entry.path();
                let bytes = std::fs::read(&path).map_err(BenchError::file(&path))?;
                let name = entry.file_name();
                archive.file(
                    &format!("{inside}/{}", name.to_string_lossy()),
                    0o755,
                    &bytes,
                );
            }
        }
        archive.file("init", 0o755, init_script(workload).as_bytes());
        Ok(archive.finish())
    }

    fn command(&self, workload: &Workload) -> Result<Command, BenchError> {
        let initramfs = self.initramfs(workload)?;
        let mut c = crate::vm::engine::qemu_microvm(&self.binary, self.kvm);
        c.args(["-display", "none"]);
        c.args(["-m", &format!("{GUEST_MIB}M"), "-smp", "1"]);
        c.arg("-kernel").arg(&self.kernel);
        c.arg("-initrd").arg(initramfs);
        c.args([
            "-append",
            // As capsa's VMs under QEMU: microvm has no i8042 to reset through.
            "console=ttyS0 reboot=t panic=-1 quiet loglevel=0 rdinit=/init",
            "-serial",
            "stdio",
        ]);
        Ok(c)
    }
}

/// What /init prints before the workload.
const BOOTED: &str = "capsa-bench-booted";
/// How long a background guest may take to reach /init.
const BOOT_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// /init: mounts what a workload expects, runs it, powers off (a triple-fault reset; QEMU
/// -no-reboot).
fn init_script(workload: &Workload) -> String {
    let argv: Vec<String> = workload
        .argv()
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    format!(
        "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs dev /dev 2>/dev/null\nmount -t tmpfs tmp /tmp\nhostname capsa-bench\necho {BOOTED}\n{}\nreboot -f\n",
        argv.join(" ")
    )
}

impl Subject for QemuPeer {
    fn info(&self) -> &SubjectInfo {
        &self.info
    }

    fn one_shot(&self, workload: &Workload) -> Result<OneShot, BenchError> {
        Ok(OneShot::plain(self.command(workload)?))
    }

    fn start(&self, workload: &Workload, publish: Option<u16>) -> Result<Instance, BenchError> {
        if publish.is_some() {
            self.can_publish()?;
        }
        let mut child = self
            .command(workload)?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(BenchError::command(self.binary.display().to_string()))?;
        // Started means booted to /init, as capsa's `run -d` means the agent started the
        // workload: wait for the line /init prints first.
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in
                    std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok)
                {
                    if line.contains(BOOTED) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            });
        }
        if rx.recv_timeout(BOOT_LIMIT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::BootTimeout {
                secs: BOOT_LIMIT.as_secs(),
            });
        }
        Ok(Instance {
            id: format!("qemu-{}", child.id()),
            roots: vec![child.id() as i32],
            cgroup_memory: None,
            guest_mib: Some(GUEST_MIB),
            child: Some(child),
            cleanup: None,
        })
    }

    fn remove(&self, instance: Instance) {
        if let Some(mut child) = instance.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn can_publish(&self) -> Result<(), BenchError> {
        Err(BenchError::CannotPublish {
            reason: "the bare QEMU peer has no network device (capsa-vm measures the tap path)"
                .into(),
        })
    }

    fn unmeasurable(&self) -> Vec<(&'static str, String)> {
        let why = "the bare QEMU peer has no disk: its root is the initramfs, in guest RAM";
        vec![
            ("file_write_fsync_mib_s", why.to_string()),
            ("file_read_cached_mib_s", why.to_string()),
        ]
    }
}

impl Drop for QemuPeer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
