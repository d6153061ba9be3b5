//! VM templates on QEMU: a guest booted once per (kernel, initramfs, QEMU binary, memory,
//! vCPUs, layout), stopped once its agent answers and before it has seen any container's
//! disk, network or identity, its device state saved with QEMU's migration (`migrate` to a
//! file, `x-ignore-shared`: the guest RAM stays in its own file, `share=on`). Each VM
//! container then starts from it: the same machine and devices, the RAM file mapped
//! privately (`share=off`), the device state loaded with `migrate-incoming`; the agent is
//! told it was restored (`Request::Restored`: RNG reseeded from host bytes, disks probed
//! again) and sets the clock and MAC from the host's requests.
//!
//! The template holds [`SLOTS`] virtio-blk devices on empty placeholders (null-co) and a
//! NIC on an unconnected hub port: a clone gives each slot its own disk (a disk's backend
//! is not part of the migration stream; the guest learns its capacity by probing it again)
//! and its NIC its own tap. A container with more disks than slots boots cold.
//!
//! QEMU 7.2 opens a `share=off` RAM file read-write, so a jailed engine that could open the
//! template's own file could rewrite every later clone's memory. So a clone maps the
//! template's RAM as a sealed memfd that no process can write ([`super::ram_holder`]),
//! shared by every clone of the template, opened by QEMU as `/proc/self/fd/N`; failing
//! that, its own sparse copy of the file (its data only, tens of MiB), owned by its
//! engine's uid. Nothing in `<root>/vm/templates/<key>` is ever writable by a clone's
//! engine, nor in its jail.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::artifacts::GuestArtifacts;
use super::engine::{Qemu, VmSpec};
use super::jail::{EngineCommand, Jail, INITRAMFS, KERNEL};
use super::protocol::{Request, Response, AGENT_PORT_NAME};
use super::qmp::Qmp;
use super::VmError;
use crate::root::StateRoot;

/// Disk slots of a template (layers, the writable layer, volumes).
pub const SLOTS: usize = 6;
/// Bumped whenever the template's machine or devices change.
const LAYOUT_VERSION: u32 = 2;
/// Where the guest RAM file appears in the engine's jail.
const RAM_IN_JAIL: &str = "/vm/ram";
/// `CAPSA_VM_TEMPLATE=off` boots every VM cold.
pub const SWITCH_ENV: &str = "CAPSA_VM_TEMPLATE";
/// The template's NIC's MAC (each clone's agent sets the clone's own).
const TEMPLATE_MAC: &str = "02:ca:50:00:00:01";

/// `CAPSA_VM_TEMPLATES`: how many templates a state root keeps (each is a RAM file on disk
/// and, while clones may come, its RAM held in memory by its holder). One is made per guest
/// shape (memory, vCPUs); past the count, the least recently used go when one is built.
pub const COUNT_ENV: &str = "CAPSA_VM_TEMPLATES";
const COUNT_DEFAULT: usize = 8;
const COUNT_RANGE: std::ops::RangeInclusive<usize> = 1..=64;
/// A file in a template's folder whose time says when a clone last started from it.
const USED: &str = "used";

/// The most templates kept, as `CAPSA_VM_TEMPLATES` says or the default.
fn max_templates() -> Result<usize, VmError> {
    super::engine::ranged_setting(
        COUNT_ENV,
        COUNT_DEFAULT,
        COUNT_RANGE,
        "how many VM templates to keep",
    )
}

/// Records that a clone starts from the template in `dir` now (its `used` file's time).
fn mark_used(dir: &Path) {
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(USED))
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// When a clone last started from the template in `dir` (or it was built).
fn last_used(dir: &Path) -> std::time::SystemTime {
    [USED, "manifest.json"]
        .iter()
        .find_map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Removes the least recently used templates beyond `max`, never `keep` (the one just
/// built). As `vm-template rm` does: their holders end, running clones keep what they
/// mapped.
fn remove_least_used(root: &StateRoot, keep: &str, max: usize) {
    let dir = templates_dir(root);
    let mut all: Vec<(std::time::SystemTime, String)> = list(root)
        .into_iter()
        .filter(|t| t.key != keep)
        .map(|t| (last_used(&dir.join(&t.key)), t.key))
        .collect();
    all.sort();
    let excess = (all.len() + 1).saturating_sub(max);
    for (_, key) in all.into_iter().take(excess) {
        super::ram_holder::stop(&dir.join(&key));
        let _ = remove(root, &key);
    }
}

/// Whether VM containers start from templates (on unless `CAPSA_VM_TEMPLATE=off`).
pub fn enabled() -> bool {
    !matches!(
        std::env::var(SWITCH_ENV).as_deref(),
        Ok("off" | "0" | "false")
    )
}

/// A file as a template depends on it: a changed file has another stamp.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FileStamp {
    path: PathBuf,
    len: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(path: &Path) -> Result<FileStamp, VmError> {
        let m = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        Ok(Self::from_metadata(path, &m))
    }

    fn from_metadata(path: &Path, m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            path: path.to_path_buf(),
            len: m.len(),
            ino: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// Everything a template's guest state depends on; its hash names the template.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Inputs {
    layout: u32,
    cmdline: String,
    slots: usize,
    kernel: FileStamp,
    /// Named by the hash of the agent and capsa-init it holds.
    initramfs: FileStamp,
    qemu: FileStamp,
    kvm: bool,
    mem_mib: u64,
    vcpus: u32,
}

/// Written last: a template without it (or whose files do not match it) is not used.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Manifest {
    inputs: Inputs,
    state_sha256: String,
    ram: FileStamp,
}

/// A template (its key and folder).
#[derive(Debug)]
pub struct Template {
    pub key: String,
    pub dir: PathBuf,
}

/// A sound template's files, opened once checked: what a clone is restored from is what was
/// checked, whatever happens to the paths meanwhile (a rebuild renames new files in).
#[derive(Debug)]
pub struct Sound {
    pub key: String,
    dir: PathBuf,
    state: std::fs::File,
    ram: std::fs::File,
}

impl Template {
    fn ram(&self) -> PathBuf {
        self.dir.join("ram")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
}

/// What [`ensure`] found or did, for the user.
pub enum Ensured {
    /// Present and sound.
    Ready(Template),
    /// Built now (`why`: it was missing, stale or damaged).
    Built(Template, String),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> VmError {
    VmError::Io(format!("vm template {}: {e}", path.display()))
}

pub fn templates_dir(root: &StateRoot) -> PathBuf {
    root.dir().join("vm").join("templates")
}

fn inputs(
    qemu: &Qemu,
    guest: &GuestArtifacts,
    mem_mib: u64,
    vcpus: u32,
) -> Result<Inputs, VmError> {
    Ok(Inputs {
        layout: LAYOUT_VERSION,
        cmdline: cmdline(),
        slots: SLOTS,
        kernel: FileStamp::of(&guest.kernel)?,
        initramfs: FileStamp::of(&guest.initramfs)?,
        qemu: FileStamp::of(&qemu.binary)?,
        kvm: qemu.kvm,
        mem_mib,
        vcpus,
    })
}

fn key_of(inputs: &Inputs) -> String {
    let json = serde_json::to_vec(inputs).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

fn sha256_file(path: &Path) -> Result<String, VmError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    sha256_of(&mut f).map_err(|e| io_err(path, e))
}

/// The sha256 of what `f` holds from its offset on.
fn sha256_of(f: &mut std::fs::File) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The template for these inputs if it is there and sound; else why not.
pub fn usable(
    root: &StateRoot,
    qemu: &Qemu,
    guest: &GuestArtifacts,
    mem_mib: u64,
    vcpus: u32,
) -> Result<Sound, String> {
    let inputs = inputs(qemu, guest, mem_mib, vcpus).map_err(|e| e.to_string())?;
    let key = key_of(&inputs);
    let t = Template {
        dir: templates_dir(root).join(&key),
        key,
    };
    let sound = check(&t, &inputs)?;
    mark_used(&t.dir);
    Ok(sound)
}

/// Template `t`'s files, opened, if they are those its manifest describes, for `inputs`.
fn check(t: &Template, inputs: &Inputs) -> Result<Sound, String> {
    let path = t.dir.join("manifest.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("none yet".into()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if manifest.inputs != *inputs {
        return Err("made for other inputs".into());
    }
    let open = |p: PathBuf| std::fs::File::open(&p).map_err(|e| format!("{}: {e}", p.display()));
    let (mut state, ram) = (open(t.state())?, open(t.ram())?);
    let meta = ram.metadata().map_err(|e| e.to_string())?;
    if FileStamp::from_metadata(&t.ram(), &meta) != manifest.ram {
        return Err("its memory file changed since it was saved".into());
    }
    if sha256_of(&mut state).map_err(|e| e.to_string())? != manifest.state_sha256 {
        return Err("its device state does not match its hash".into());
    }
    use std::io::Seek;
    state.rewind().map_err(|e| e.to_string())?;
    Ok(Sound {
        key: t.key.clone(),
        dir: t.dir.clone(),
        state,
        ram,
    })
}

/// The template for these inputs, built (under a lock, once among concurrent capsas) when
/// missing, stale or damaged.
pub fn ensure(
    root: &StateRoot,
    qemu: &Qemu,
    guest: &GuestArtifacts,
    mem_mib: u64,
    vcpus: u32,
) -> Result<Ensured, VmError> {
    let max = max_templates()?;
    let inputs = inputs(qemu, guest, mem_mib, vcpus)?;
    let key = key_of(&inputs);
    let dir = templates_dir(root).join(&key);
    let t = Template { dir, key };
    let why = match check(&t, &inputs) {
        Ok(_) => return Ok(Ensured::Ready(t)),
        Err(why) => replaced_one(root, &t.key, &inputs).unwrap_or(why),
    };
    super::jail::private_dir(&templates_dir(root))?;
    {
        let lock_path = templates_dir(root).join(format!("{}.lock", t.key));
        let _lock = super::jail::lock_file(&lock_path, true).map_err(|e| io_err(&lock_path, e))?;
        if check(&t, &inputs).is_ok() {
            return Ok(Ensured::Ready(t)); // another capsa built it while we waited
        }
        let built = room_for(&templates_dir(root), inputs.mem_mib)
            .and_then(|()| build(&t, qemu, guest, &inputs));
        if built.is_err() {
            let _ = std::fs::remove_dir_all(&t.dir);
        }
        built?;
    }
    // With this template's lock let go: removing another takes that one's lock, and two
    // capsas each holding its own while waiting for the other's would wait for ever.
    remove_replaced(root, &t.key, &inputs);
    remove_least_used(root, &t.key, max);
    Ok(Ensured::Built(t, why))
}

/// A template's RAM file takes up to its guest's memory on disk (what the booted guest
/// wrote): a build that would fill the disk is refused before it starts (QEMU, writing
/// guest memory into a full file system, dies of SIGBUS with nothing to say).
fn room_for(dir: &Path, mem_mib: u64) -> Result<(), VmError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| io_err(dir, e))?;
    let free_mib = (st.blocks_available() as u64 * st.fragment_size() as u64) >> 20;
    if free_mib < mem_mib {
        return Err(VmError::Tool(format!(
            "building a VM template for a {mem_mib} MiB guest: no space left on device ({free_mib} \
             MiB free in {}, its RAM file may take {mem_mib} MiB)",
            dir.display()
        )));
    }
    Ok(())
}

/// Why no template of this shape served, when one of the same memory and vCPUs is there
/// under another key (its kernel, agent or QEMU changed): "KEY, stale (...)".
fn replaced_one(root: &StateRoot, key: &str, inputs: &Inputs) -> Option<String> {
    list(root)
        .into_iter()
        .find(|i| i.key != key && i.mem_mib == inputs.mem_mib && i.vcpus == inputs.vcpus)
        .map(|i| format!("{}, {}", i.key, i.status))
}

/// Removes the templates the one just built for `inputs` replaces: stale ones (their kernel,
/// agent or QEMU changed since) and those for the same memory and vCPUs made from other
/// files (an older agent or kernel still on disk). No VM starts from them any more; their
/// holders end with their folders, and their memory goes once their running clones end
/// (each clone's engine keeps what it mapped). Without this, every upgrade of the agent
/// left a template's RAM held in memory for good.
fn remove_replaced(root: &StateRoot, key: &str, inputs: &Inputs) {
    for info in list(root) {
        let same_shape = info.mem_mib == inputs.mem_mib && info.vcpus == inputs.vcpus;
        if info.key != key && (info.status.starts_with("stale") || same_shape) {
            super::ram_holder::stop(&templates_dir(root).join(&info.key));
            let _ = remove(root, &info.key);
        }
    }
}

/// One template of a state root, as `system vm-template ls` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TemplateInfo {
    pub key: String,
    pub mem_mib: u64,
    pub vcpus: u32,
    pub kernel: PathBuf,
    /// Guest memory the template's RAM file holds on disk (its holes take none).
    pub ram_bytes: u64,
    /// `ready`, or why no VM will start from it (it is rebuilt or replaced when needed).
    pub status: String,
}

/// The templates of `root`, by key.
pub fn list(root: &StateRoot) -> Vec<TemplateInfo> {
    let mut out: Vec<TemplateInfo> = std::fs::read_dir(templates_dir(root))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| describe(&e.path()))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn describe(dir: &Path) -> TemplateInfo {
    let key = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ram_bytes = std::fs::metadata(dir.join("ram"))
        .map(|m| m.blocks() * 512)
        .unwrap_or(0);
    let t = Template {
        key: key.clone(),
        dir: dir.to_path_buf(),
    };
    let manifest: Option<Manifest> = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(m) = manifest else {
        return TemplateInfo {
            key,
            mem_mib: 0,
            vcpus: 0,
            kernel: PathBuf::new(),
            ram_bytes,
            status: "incomplete (being built, or its build failed)".into(),
        };
    };
    let current = |f: &FileStamp| FileStamp::of(&f.path).is_ok_and(|now| now == *f);
    let i = &m.inputs;
    let status = if i.layout != LAYOUT_VERSION || i.cmdline != cmdline() || i.slots != SLOTS {
        "stale (made by another version of capsa)".to_string()
    } else if key_of(i) != key {
        "damaged (its manifest is not the one its name says)".to_string()
    } else if !(current(&i.kernel) && current(&i.initramfs) && current(&i.qemu)) {
        "stale (its kernel, agent or QEMU changed)".to_string()
    } else {
        match check(&t, i) {
            Ok(_) => "ready".into(),
            Err(why) => format!("damaged ({why})"),
        }
    };
    TemplateInfo {
        key,
        mem_mib: i.mem_mib,
        vcpus: i.vcpus,
        kernel: i.kernel.path.clone(),
        ram_bytes,
        status,
    }
}

/// Removes template `key` (under its build lock: never one being built); false if absent.
pub fn remove(root: &StateRoot, key: &str) -> Result<bool, VmError> {
    let valid = !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit());
    let dir = templates_dir(root).join(key);
    if !valid || !dir.is_dir() {
        return Ok(false);
    }
    let lock_path = templates_dir(root).join(format!("{key}.lock"));
    let _lock = super::jail::lock_file(&lock_path, true).map_err(|e| io_err(&lock_path, e))?;
    // The lock file stays: a capsa waiting on it holds that very file.
    std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    Ok(true)
}

/// The machine both the template and its clones run: same devices in the same order.
/// `mem_path`: the guest RAM's file as the engine opens it.
fn machine_args(qemu: &Qemu, mem_mib: u64, vcpus: u32, mem_path: &str, share: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "-M",
        "microvm,acpi=off,rtc=off,memory-backend=mem",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-nographic",
        "-sandbox",
        super::engine::QEMU_SANDBOX,
    ]
    .map(String::from)
    .to_vec();
    if qemu.kvm {
        args.extend(["-accel", "kvm", "-cpu", "host"].map(String::from));
    } else {
        let cache = qemu.tcg_cache_mib;
        args.extend(["-accel".into(), format!("tcg,tb-size={cache}")]);
    }
    let share = if share { "on" } else { "off" };
    args.extend([
        "-object".into(),
        format!("memory-backend-file,id=mem,size={mem_mib}M,mem-path={mem_path},share={share}"),
        "-m".into(),
        format!("{mem_mib}M"),
        "-smp".into(),
        vcpus.to_string(),
        "-kernel".into(),
        KERNEL.into(),
        "-initrd".into(),
        INITRAMFS.into(),
        "-append".into(),
        cmdline(),
    ]);
    args
}

/// The template's kernel command line: a cold boot's, with expedited RCU grace periods
/// (the disks' unbind after a restore waits for several; under TCG each normal one takes
/// tens of milliseconds).
fn cmdline() -> String {
    format!(
        "{} rcupdate.rcu_expedited=1",
        super::boot::QEMU_KERNEL_CMDLINE
    )
}

/// A placeholder's size: larger than any disk a clone puts in the slot. The guest keeps the
/// capacity and flags it probed here (probing again after a restore, by unbinding and
/// binding each disk, cost 150 ms of a start under TCG), which is safe: file systems read
/// and write only within their own size, a read-only disk's writes are refused by QEMU
/// (`read-only=on`), whatever the guest believes, and a read-only volume says so in its
/// `GuestVolume`. A slot the clone leaves empty stays this empty placeholder: reads give
/// zeros, writes go nowhere, and nothing in the container sees it.
const PLACEHOLDER_BYTES: u64 = 1 << 40;

fn empty_slot(i: usize) -> [String; 4] {
    [
        "-blockdev".into(),
        format!("driver=null-co,node-name=d{i},size={PLACEHOLDER_BYTES}"),
        "-device".into(),
        format!("virtio-blk-device,drive=d{i}"),
    ]
}

fn serial_args(c: &mut EngineCommand, console: OwnedFd, agent: OwnedFd) -> Vec<String> {
    let console = c.pass(console);
    let agent = c.pass(agent);
    vec![
        "-add-fd".into(),
        format!("fd={console},set=0"),
        "-chardev".into(),
        "file,id=console,path=/dev/fdset/0,append=on".into(),
        "-serial".into(),
        "chardev:console".into(),
        "-device".into(),
        "virtio-serial-device".into(),
        "-chardev".into(),
        format!("socket,id=agent,fd={agent}"),
        "-device".into(),
        format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}"),
    ]
}

fn qmp_args(c: &mut EngineCommand, qmp: OwnedFd) -> Vec<String> {
    let qmp = c.pass(qmp);
    vec![
        "-chardev".into(),
        format!("socket,id=qmp,fd={qmp}"),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
    ]
}

/// The engine command without arguments; `ram`, if given, bound writable at [`RAM_IN_JAIL`].
fn base_command(qemu: &Qemu, ram: Option<&Path>) -> EngineCommand {
    EngineCommand {
        binary: qemu.binary.clone(),
        args: Vec::new(),
        fds: Vec::new(),
        read_only: ["/usr/share/qemu"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .collect(),
        read_write: ram
            .map(|r| (r.to_path_buf(), PathBuf::from(RAM_IN_JAIL)))
            .into_iter()
            .collect(),
        kvm: qemu.kvm,
        proc_fs: false,
        seccomp: format!("qemu -sandbox {}", super::engine::QEMU_SANDBOX),
    }
}

/// Boots the template, saves its device state and writes its manifest.
fn build(
    t: &Template,
    qemu: &Qemu,
    guest: &GuestArtifacts,
    inputs: &Inputs,
) -> Result<(), VmError> {
    let _ = std::fs::remove_dir_all(&t.dir);
    super::jail::private_dir(&t.dir)?;
    let ram = t.dir.join("ram.tmp");
    let state = t.dir.join("state.tmp");
    let create = |p: &Path| {
        std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(p)
            .map_err(|e| io_err(p, e))
    };
    let ram_file = create(&ram)?;
    let state_file = create(&state)?;
    let log_path = t.dir.join("engine.log");
    let log = create(&log_path)?;
    let console_path = t.dir.join("console.log");
    // Write-only, as QEMU opens /dev/fdset/0 for the console's `append=on`.
    let console = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&console_path)
        .map_err(|e| io_err(&console_path, e))?;
    let (agent, agent_end) = UnixStream::pair().map_err(|e| io_err(&t.dir, e))?;
    let (qmp, qmp_end) = UnixStream::pair().map_err(|e| io_err(&t.dir, e))?;
    let mut c = base_command(qemu, Some(&ram));
    let mut args = machine_args(qemu, inputs.mem_mib, inputs.vcpus, RAM_IN_JAIL, true);
    for i in 0..SLOTS {
        args.extend(empty_slot(i));
    }
    args.extend(
        [
            "-netdev",
            "hubport,id=n0,hubid=0",
            "-device",
            &format!("virtio-net-device,netdev=n0,mac={TEMPLATE_MAC}"),
        ]
        .map(String::from),
    );
    args.extend(serial_args(&mut c, console.into(), agent_end.into()));
    args.extend(qmp_args(&mut c, qmp_end.into()));
    c.args = args;
    let cgroup = super::layout::host_cgroup(None, &format!("capsa-vmtpl-{}", t.key))
        .map_err(|e| VmError::Jail(e.to_string()))?;
    let jail = Jail::prepare(
        cgroup,
        inputs.mem_mib + qemu_overhead(qemu),
        None,
        qemu.kvm,
        &guest.kernel,
        &guest.initramfs,
    )?;
    let uid = jail.uid.uid;
    let saved = std::os::unix::fs::fchown(&ram_file, Some(uid), Some(uid))
        .map_err(|e| io_err(&ram, e))
        .and_then(|()| jail.spawn(c, &log))
        .and_then(|mut engine| {
            let r = save_state(agent, qmp, &state_file);
            if r.is_err() {
                let _ = engine.kill();
            }
            let _ = engine.wait();
            r
        });
    jail.destroy();
    if let Err(e) = saved {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(VmError::Tool(format!(
            "building VM template {}: {e}; engine: {}",
            t.key,
            log.trim()
        )));
    }
    // The template's files are root's from now on; no engine writes them again.
    std::os::unix::fs::fchown(&ram_file, Some(0), Some(0)).map_err(|e| io_err(&ram, e))?;
    for (f, p) in [(&ram_file, &ram), (&state_file, &state)] {
        f.sync_all().map_err(|e| io_err(p, e))?;
    }
    if state_file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(io_err(&state, "QEMU wrote no device state"));
    }
    std::fs::rename(&ram, t.ram()).map_err(|e| io_err(&ram, e))?;
    std::fs::rename(&state, t.state()).map_err(|e| io_err(&state, e))?;
    let manifest = Manifest {
        inputs: inputs.clone(),
        state_sha256: sha256_file(&t.state())?,
        ram: FileStamp::of(&t.ram())?,
    };
    let path = t.dir.join("manifest.json");
    crate::fsutil::write_json_atomic(&path, &manifest).map_err(|e| io_err(&path, e))
}

fn qemu_overhead(qemu: &Qemu) -> u64 {
    use super::engine::Engine;
    qemu.overhead_mib()
}

/// Waits for the template's agent, stops the guest and has QEMU write its device state to
/// `state` (handed over QMP; its RAM stays in the shared file), then quits it.
fn save_state(agent: UnixStream, qmp: UnixStream, state: &std::fs::File) -> Result<(), VmError> {
    let mut agent = super::agent::AgentClient::new(agent, "template");
    match agent.call(Request::Hello, super::boot::BOOT_TIMEOUT)? {
        Response::Hello { .. } => {}
        other => return Err(VmError::Agent(format!("{} to hello", other.kind()))),
    }
    let mut qmp = Qmp::connect(qmp)?;
    qmp.execute("stop", None)?;
    qmp.execute("migrate-set-capabilities", Some(ignore_shared()))?;
    qmp.hand_fd("state", state.as_raw_fd())?;
    qmp.execute("migrate", Some(serde_json::json!({ "uri": "fd:state" })))?;
    qmp.wait_migration()?;
    let _ = qmp.execute("quit", None);
    Ok(())
}

fn ignore_shared() -> serde_json::Value {
    serde_json::json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] })
}

/// A clone being restored: its engine command, and what the restore needs after spawn.
pub struct Restore {
    qmp: UnixStream,
    /// The template's key and folder.
    key: String,
    dir: PathBuf,
    state: std::fs::File,
    /// The clone's guest RAM.
    pub ram: CloneRam,
}

/// A clone's guest RAM: the template's sealed memfd, shared with every clone of it, or
/// (failing that) its own copy of the template's RAM file.
pub enum CloneRam {
    Shared(OwnedFd),
    Copy(RamCopy),
}

impl CloneRam {
    /// The template's sealed memfd from its holder (checked: sealed, of this template's
    /// file); else a copy of its RAM at `path`.
    pub fn make(t: &Sound, path: &Path) -> Result<CloneRam, VmError> {
        match super::ram_holder::fetch(&t.dir, &t.ram) {
            Ok(fd) => Ok(CloneRam::Shared(fd)),
            Err(e) => {
                tracing::info!(%e, "the VM template's shared RAM: a private copy");
                RamCopy::make(t, path).map(CloneRam::Copy)
            }
        }
    }

    /// Makes a copy the engine's (uid `uid`) alone; the memfd needs nothing.
    pub fn give_to(&self, uid: u32) -> Result<(), VmError> {
        match self {
            CloneRam::Shared(_) => Ok(()),
            CloneRam::Copy(copy) => copy.give_to(uid),
        }
    }

    /// Once engine `pid` has mapped its RAM: a copy's file is removed; a memfd's procfs is
    /// taken from the jail.
    pub fn mapped(&self, pid: i32) -> Result<(), VmError> {
        match self {
            CloneRam::Shared(_) => super::jail::detach_proc(pid),
            CloneRam::Copy(copy) => {
                copy.remove();
                Ok(())
            }
        }
    }

    /// Whether the clone maps the shared memfd.
    pub fn is_shared(&self) -> bool {
        matches!(self, CloneRam::Shared(_))
    }
}

/// A clone's copy of the template's RAM, removed when dropped (its engine keeps what it
/// mapped): on every path out of the boot, none is left.
pub struct RamCopy(PathBuf);

impl RamCopy {
    /// Copies the template's RAM to `path` (its data only: the holes stay holes).
    pub fn make(t: &Sound, path: &Path) -> Result<RamCopy, VmError> {
        let _ = std::fs::remove_file(path);
        let copy = RamCopy(path.to_path_buf());
        let dst = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        super::sparse::copy(&t.ram, &dst).map_err(|e| io_err(path, e))?;
        Ok(copy)
    }

    /// Makes it the engine's (uid `uid`) alone.
    pub fn give_to(&self, uid: u32) -> Result<(), VmError> {
        std::os::unix::fs::chown(&self.0, Some(uid), Some(uid)).map_err(|e| io_err(&self.0, e))
    }

    /// Removes the file now (the engine has mapped it).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for RamCopy {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The clone's engine command: the template's machine with `vm`'s disks in the slots, its
/// tap (or an unconnected hub port) behind the NIC, its RAM (the shared memfd, opened as
/// `/proc/self/fd/N` in a jail with a procfs, or its own copy bound at [`RAM_IN_JAIL`]),
/// its QMP and the template's device state as descriptors.
pub fn restore_command(
    qemu: &Qemu,
    t: &Sound,
    vm: VmSpec,
    ram: CloneRam,
) -> Result<(EngineCommand, Restore), VmError> {
    if vm.disks.len() > SLOTS {
        return Err(VmError::Tool(format!(
            "{} disks: a VM template has {SLOTS} slots",
            vm.disks.len()
        )));
    }
    let state = t
        .state
        .try_clone()
        .map_err(|e| VmError::Io(format!("vm template {}: {e}", t.key)))?;
    let (qmp, qmp_end) =
        UnixStream::pair().map_err(|e| VmError::Io(format!("QMP socket pair: {e}")))?;
    let (mut c, mem_path) = match &ram {
        CloneRam::Shared(memfd) => {
            let mut c = base_command(qemu, None);
            let memfd = memfd
                .try_clone()
                .map_err(|e| VmError::Io(format!("vm template {}: {e}", t.key)))?;
            let n = c.pass(memfd);
            c.proc_fs = true;
            (c, format!("/proc/self/fd/{n}"))
        }
        CloneRam::Copy(copy) => (base_command(qemu, Some(&copy.0)), RAM_IN_JAIL.to_string()),
    };
    let mut args = machine_args(qemu, vm.mem_mib, vm.vcpus, &mem_path, false);
    for i in 0..SLOTS {
        let Some(d) = vm.disks.get(i) else {
            args.extend(empty_slot(i));
            continue;
        };
        // Slot i holds disk i exactly as the cold boot's arguments place it.
        args.extend(super::engine::disk_args(&mut c, i, d)?);
    }
    let netdev = match vm.nic {
        Some((tap, _mac)) => format!("tap,id=n0,fd={}", c.pass(tap)),
        None => "hubport,id=n0,hubid=0".into(),
    };
    args.extend([
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("virtio-net-device,netdev=n0,mac={TEMPLATE_MAC}"),
    ]);
    args.extend(serial_args(&mut c, vm.console, vm.agent));
    args.extend(qmp_args(&mut c, qmp_end.into()));
    args.extend(["-incoming".into(), "defer".into()]);
    c.args = args;
    Ok((
        c,
        Restore {
            qmp,
            key: t.key.clone(),
            dir: t.dir.clone(),
            state,
            ram,
        },
    ))
}

impl Restore {
    /// Has the spawned clone (engine `pid`) load the template's device state; its guest
    /// runs once loaded. The engine has mapped its RAM once it answers QMP: before its guest
    /// runs, its RAM copy is removed, or the procfs it opened the memfd from taken away.
    pub fn load(&self, pid: i32) -> Result<(), VmError> {
        let stream = self
            .qmp
            .try_clone()
            .map_err(|e| VmError::Io(format!("QMP: {e}")))?;
        let mut qmp = Qmp::connect(stream)?;
        self.ram.mapped(pid)?;
        qmp.execute("migrate-set-capabilities", Some(ignore_shared()))?;
        qmp.hand_fd("state", self.state.as_raw_fd())?;
        qmp.execute(
            "migrate-incoming",
            Some(serde_json::json!({ "uri": "fd:state" })),
        )?;
        qmp.run_when_loaded()
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Removes the template whose state its engine refused, as `vm-template rm` does (its
    /// holder ends, running clones keep what they mapped); says what was done, for the
    /// error that follows.
    pub fn discard(&self) -> String {
        let Some(root) = self.dir.parent() else {
            return String::new();
        };
        let lock_path = root.join(format!("{}.lock", self.key));
        let removed = super::jail::lock_file(&lock_path, true)
            .map_err(|e| e.to_string())
            .and_then(|_lock| {
                super::ram_holder::stop(&self.dir);
                std::fs::remove_dir_all(&self.dir).map_err(|e| e.to_string())
            });
        match removed {
            Ok(()) => " (the template was removed: the next VM builds it again)".into(),
            Err(e) => format!(" (removing the template failed: {e})"),
        }
    }

    /// What the agent is told first: host random bytes for its RNG.
    pub fn restored_request() -> Result<Request, VmError> {
        let mut entropy = vec![0u8; 64];
        getrandom(&mut entropy)?;
        Ok(Request::Restored {
            entropy: super::protocol::Bytes(entropy),
        })
    }
}

fn getrandom(buf: &mut [u8]) -> Result<(), VmError> {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| VmError::Io(format!("/dev/urandom: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_every_input() {
        let stamp = |p: &str| FileStamp {
            path: p.into(),
            len: 1,
            ino: 2,
            mtime_ns: 3,
            ctime_ns: 4,
        };
        let base = Inputs {
            layout: LAYOUT_VERSION,
            cmdline: cmdline(),
            slots: SLOTS,
            kernel: stamp("/k"),
            initramfs: stamp("/i"),
            qemu: stamp("/q"),
            kvm: false,
            mem_mib: 256,
            vcpus: 1,
        };
        let mut kernel = base.clone();
        kernel.kernel.mtime_ns += 1;
        let mut mem = base.clone();
        mem.mem_mib = 512;
        let mut cpus = base.clone();
        cpus.vcpus = 2;
        let keys: std::collections::HashSet<String> = [&base, &kernel, &mem, &cpus]
            .iter()
            .map(|i| key_of(i))
            .collect();
        assert_eq!(keys.len(), 4);
    }
}
