//! `capsa system vm-template ls|rm|warm`: the VM templates VM containers start from.

use clap::{Args, Subcommand};

use super::{report, EXIT_FAILURE};
use crate::root::StateRoot;
use crate::vm::{artifacts, engine, template};

/// `capsa system vm-template VERB`.
#[derive(Subcommand, Debug)]
pub enum VmTemplateCommand {
    /// List the VM templates: key, guest memory and vCPUs, memory on disk, status.
    Ls(LsArgs),
    /// Remove VM templates (all, or those named); the next VM container builds its own.
    Rm(RmArgs),
    /// Build the template for this host's guest kernel, agent and QEMU now, so the first
    /// VM container starts from it.
    Warm(WarmArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Template keys (as `ls` lists them); none: every template.
    keys: Vec<String>,
}

#[derive(Args, Debug)]
pub struct WarmArgs {
    /// Guest memory in MiB (a VM container gets its `--memory` plus 96 MiB, else 256).
    #[arg(long, default_value_t = crate::vm::run::DEFAULT_GUEST_MIB)]
    guest_mib: u64,
    /// vCPUs (a VM container gets its `--cpus` rounded up, else 1).
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
}

pub fn vm_template(root: &StateRoot, cmd: VmTemplateCommand) -> i32 {
    match cmd {
        VmTemplateCommand::Ls(a) => ls(root, a),
        VmTemplateCommand::Rm(a) => rm(root, a),
        VmTemplateCommand::Warm(a) => warm(root, a),
    }
}

fn ls(root: &StateRoot, args: LsArgs) -> i32 {
    let list = template::list(root);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return 0;
    }
    println!(
        "{:<18}{:<10}{:<7}{:<10}{:<54}KERNEL",
        "TEMPLATE", "MEMORY", "VCPUS", "ON DISK", "STATUS"
    );
    for t in list {
        println!(
            "{:<18}{:<10}{:<7}{:<10}{:<53} {}",
            t.key,
            format!("{}MiB", t.mem_mib),
            t.vcpus,
            format!("{:.1}MiB", t.ram_bytes as f64 / f64::from(1 << 20)),
            t.status,
            t.kernel.display()
        );
    }
    0
}

fn rm(root: &StateRoot, args: RmArgs) -> i32 {
    let keys: Vec<String> = if args.keys.is_empty() {
        template::list(root).into_iter().map(|t| t.key).collect()
    } else {
        args.keys
    };
    let mut code = 0;
    for key in keys {
        match template::remove(root, &key) {
            Ok(true) => println!("{key}"),
            Ok(false) => {
                eprintln!("capsa: no VM template {key:?}");
                code = EXIT_FAILURE;
            }
            Err(e) => {
                report(&e);
                code = EXIT_FAILURE;
            }
        }
    }
    code
}

/// The shapes a VM container can have on this host: 128 MiB up to the host's memory, one
/// vCPU up to its CPUs.
fn check_shape(args: &WarmArgs) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if !(1..=cpus).contains(&args.vcpus) {
        return Err(format!(
            "--vcpus {}: from 1 to {cpus}, the CPUs this host has",
            args.vcpus
        ));
    }
    let host_mib = host_memory_mib();
    if !(MIN_GUEST_MIB..=host_mib).contains(&args.guest_mib) {
        return Err(format!(
            "--guest-mib {}: from {MIN_GUEST_MIB} to {host_mib}, the memory this host has",
            args.guest_mib
        ));
    }
    Ok(())
}

/// The smallest guest a VM container gets (`--memory` below it is raised to it).
const MIN_GUEST_MIB: u64 = 128;

fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib >> 10)
}

fn warm(root: &StateRoot, args: WarmArgs) -> i32 {
    if let Err(e) = check_shape(&args) {
        eprintln!("capsa: system vm-template warm: {e}");
        return super::EXIT_ENGINE_ERROR;
    }
    let built = engine::select(Some("qemu")).and_then(|(engine, _)| {
        let guest = artifacts::locate(root)?;
        let qemu = engine
            .qemu()
            .ok_or_else(|| crate::vm::VmError::NoEngine("QEMU".into()))?;
        template::ensure(root, qemu, &guest, args.guest_mib, args.vcpus)
    });
    match built {
        Ok(template::Ensured::Ready(t)) => println!("{} (ready already)", t.key),
        Ok(template::Ensured::Built(t, _)) => println!("{} (built)", t.key),
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    }
    0
}
