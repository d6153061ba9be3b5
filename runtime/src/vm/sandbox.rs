//! The microVM: the [`Sandbox`] whose workload runs in a guest, jailed engine on the host,
//! guest agent as PID 1 running the same OCI spec through the same isolation core. The
//! record, names, spec, network plan, logs and restart policy are the container folder's
//! shared code; what differs is here and in [`super::run`] (boot and monitor),
//! [`super::control`] (other commands' way to a running VM) and [`super::stopped`] (`cp`
//! with the VM stopped).

use std::io::{Read, Write};
use std::path::Path;

use crate::container::exec::ExecOptions;
use crate::container::options::RunOptions;
use crate::container::sandbox::{
    has_terminal, Attached, Counters, Isolation, Notify, RunOutcome, Sandbox, TerminalRun,
};
use crate::container::session::{Front, Session};
use crate::container::state::{State, Status};
use crate::container::{ContainerError, ContainerStore};
use crate::image::Image;
use crate::linux::cgroups::CgroupStats;
use crate::linux::process::exec_fifo::ExecOutcome;
use serde_json::{json, Value};

/// The microVM isolation.
pub struct MicroVm;

impl Sandbox for MicroVm {
    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    fn create(
        &self,
        store: &ContainerStore,
        image: Image,
        opts: &RunOptions,
        notify: Notify,
    ) -> Result<String, ContainerError> {
        super::run::create(store, image, opts, notify)
    }

    fn run_detached(
        &self,
        store: &ContainerStore,
        image: Image,
        opts: &RunOptions,
        notify: Notify,
    ) -> Result<(String, ExecOutcome), ContainerError> {
        // Booted at once under its monitor, which answers once the workload started.
        let id = super::run::run_detached(store, image, opts, notify)?;
        Ok((id, ExecOutcome::Started))
    }

    fn run_foreground(
        &self,
        store: &ContainerStore,
        image: Image,
        opts: &RunOptions,
        notify: Notify,
        front: &mut dyn Front,
    ) -> Result<RunOutcome, ContainerError> {
        super::run::run_foreground(store, image, opts, notify, front)
    }

    fn terminal_run(&self) -> TerminalRun {
        // The guest's pty is relayed by the run itself, over the agent connection.
        TerminalRun::InRun
    }

    fn start(
        &self,
        store: &ContainerStore,
        id: &str,
        notify: Notify,
    ) -> Result<ExecOutcome, ContainerError> {
        // No init waits at a gate: start boots the VM.
        super::run::start(store, id, notify).map(|()| ExecOutcome::Started)
    }

    fn prepare_start(&self, _store: &ContainerStore, _id: &str) -> Result<bool, ContainerError> {
        // Its monitor exists only once it boots: `start -a` follows its log instead.
        Ok(false)
    }

    fn exec(
        &self,
        store: &ContainerStore,
        id: &str,
        opts: &ExecOptions,
    ) -> Result<Option<Box<dyn Session>>, ContainerError> {
        super::control::exec(store, id, opts)
    }

    fn counters(&self, state: &State) -> Counters {
        Counters {
            cgroup: guest_counters(state),
            net: tap_bytes(state),
        }
    }

    fn top(&self, state: &State, ps_args: &[String]) -> Result<Vec<String>, ContainerError> {
        // The processes live in the guest: the agent lists them (ps options do not apply).
        if !ps_args.is_empty() {
            return Err(ContainerError::InvalidArgument(format!(
                "container {}: ps options are not available for VM containers",
                state.name
            )));
        }
        super::control::top(&state.id)
    }

    fn freeze(&self, state: &State, frozen: bool) -> Result<(), ContainerError> {
        // The workload's cgroup is inside the guest: the agent freezes it.
        super::control::set_frozen(&state.id, frozen)
    }

    fn copy_out(
        &self,
        store: &ContainerStore,
        state: &State,
        src: &Path,
        dest: crate::container::cp::CopyDest,
        keep_owners: bool,
    ) -> Result<(), ContainerError> {
        // The copy process runs in the running workload's root, or, with the VM stopped, in
        // a VM booted for the copy alone: the guest-written disk is only ever parsed by the
        // guest's kernel.
        let running = serves_copies(state)?;
        let id = state.id.as_str();
        crate::container::cp::copy_out_streamed(dest, keep_owners, src, |to: &mut dyn Write| {
            if running {
                super::control::copy_out(id, src, to)
            } else {
                super::stopped::copy_out(store, id, src, to)
            }
        })
    }

    fn write_layer(
        &self,
        store: &ContainerStore,
        state: &State,
        skipped: &[String],
        out: &mut dyn Write,
    ) -> Result<(), ContainerError> {
        // As for `cp`: only the guest's kernel reads the guest-written disk.
        let skipped = skipped.to_vec();
        match serves_copies(state)? {
            true => super::control::copy_layer_out(&state.id, skipped, out),
            false => super::stopped::copy_layer_out(store, &state.id, skipped, out),
        }
    }

    fn copy_in(
        &self,
        store: &ContainerStore,
        state: &State,
        src: crate::container::cp::CopySource,
        dest: &Path,
        keep_owners: bool,
    ) -> Result<(), ContainerError> {
        let running = serves_copies(state)?;
        let id = state.id.as_str();
        crate::container::cp::copy_in_streamed(src, |from: &mut dyn Read, as_is| {
            let how = super::control::CopyInto { as_is, keep_owners };
            if running {
                super::control::copy_in(id, dest, from, how)
            } else {
                super::stopped::copy_in(store, id, dest, from, how)
            }
        })
    }

    fn attach(
        &self,
        store: &ContainerStore,
        state: &State,
        stdin: bool,
    ) -> Result<Attached, ContainerError> {
        // The VM's monitor relays the workload's streams (its pty with -t).
        let tty = has_terminal(store, &state.id);
        super::control::attach(store, &state.id, stdin, tty).map(Attached::Session)
    }

    fn inspect_extra(&self, store: &ContainerStore, id: &str) -> Option<(&'static str, Value)> {
        Some(("Engine", engine(store, id)))
    }

    fn cleanup(&self, id: &str) {
        // The monitor's control socket, outside the container's folder (a monitor killed
        // with SIGKILL could not remove it).
        let _ = std::fs::remove_file(super::control::path(id));
    }
}

/// Whether a VM container's running monitor serves a copy (else the VM is booted for it
/// alone): refused while its monitor is about to boot it again.
fn serves_copies(state: &State) -> Result<bool, ContainerError> {
    if state.restarting {
        return Err(ContainerError::WrongState {
            id: crate::container::id::short(&state.id).to_string(),
            reason: "the VM is restarting; copy when it runs or after it stops".into(),
        });
    }
    Ok(state.status == Status::Running)
}

/// A VM container's counters, from the workload's cgroup inside the guest (through the VM's
/// monitor); the limit is the cgroup's, else the guest's memory.
fn guest_counters(s: &State) -> CgroupStats {
    match super::control::stats(&s.id) {
        Ok(g) => CgroupStats {
            cpu_ns: g.cpu_ns,
            cpu_user_ns: g.cpu_user_ns,
            cpu_kernel_ns: g.cpu_kernel_ns,
            memory_usage: g.memory_usage,
            memory_inactive_file: 0,
            memory_limit: g.memory_limit.or(Some(g.guest_memory_total)),
            block_read: g.block_read,
            block_write: g.block_write,
            pids: g.pids,
        },
        Err(_) => CgroupStats::default(),
    }
}

/// Bytes a VM received and sent: its tap's counters, seen from the host side (the tap's
/// transmit is the VM's receive).
fn tap_bytes(s: &State) -> (u64, u64) {
    let Some(e) = &s.endpoint else { return (0, 0) };
    let read = |what: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{what}", e.veth))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (read("tx_bytes"), read("rx_bytes"))
}

/// A running VM's engine and its jail: uid, gid, cgroup, capabilities and seccomp, as the
/// kernel reports them in /proc now (null when no engine runs).
fn engine(store: &ContainerStore, id: &str) -> Value {
    let Some(record) = super::boot::engine_record(store, id) else {
        return Value::Null;
    };
    let seen = super::jail::confinement(record.pid).unwrap_or_default();
    let cgroup = record
        .cgroup
        .dirs
        .get("memory")
        .or_else(|| record.cgroup.dirs.get("unified"))
        .or_else(|| record.cgroup.dirs.values().next());
    let limit = crate::linux::cgroups::manager(&record.cgroup)
        .stats()
        .memory_limit;
    json!({
        "Name": record.engine,
        "Pid": record.pid,
        "Uid": seen.uid.first(),
        "Gid": seen.gid.first(),
        "Cgroup": cgroup.map(|d| d.display().to_string()),
        "MemoryLimit": limit,
        "Seccomp": match seen.seccomp { 2 => "filter", 1 => "strict", _ => "disabled" },
        "SeccompPolicy": record.seccomp,
        "NoNewPrivs": seen.no_new_privs,
        "CapEff": format!("{:016x}", seen.cap_eff),
        "CapPrm": format!("{:016x}", seen.cap_prm),
        "CapBnd": format!("{:016x}", seen.cap_bnd),
    })
}
