//! `version`, `info`.

use crate::container::{ContainerStore, Status};
use crate::host::HostInfo;
use crate::image::ImageStore;
use crate::root::StateRoot;
use crate::template::format::{Format, FormatError};
use crate::template::Shape;
use clap::Args;

/// capsa's engine API version (the Docker Engine API version its REST API will follow).
pub const API_VERSION: &str = "1.43";

/// `info` flags.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    /// Format with a Go template over Docker's field names ({{.ServerVersion}},
    /// {{.ContainersRunning}}, {{.CgroupVersion}}, {{json .}} ...), or `json`.
    #[arg(short = 'f', long)]
    format: Option<String>,
}

/// How `info --format` sees its object (Docker's type for it).
const INFO_SHAPE: Shape = Shape {
    type_name: Some("info.dockerInfo"),
    string_maps: &[],
    maps: &[],
};

/// `version`, laid out as `docker version` prints it.
pub fn version() -> i32 {
    let v = env!("CARGO_PKG_VERSION");
    let os_arch = format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH);
    println!("Client:");
    println!(" Version:           {v}");
    println!(" API version:       {API_VERSION}");
    println!(" OS/Arch:           {os_arch}");
    println!();
    println!("Server: capsa engine (daemonless; the CLI is the engine)");
    println!(" Engine:");
    println!("  Version:          {v}");
    println!("  API version:      {API_VERSION}");
    println!("  OS/Arch:          {os_arch}");
    println!("  Isolations:       container, vm");
    0
}

/// `info`: the facts every figure is labelled with.
pub fn info(root: &StateRoot, args: InfoArgs) -> i32 {
    let format = match Format::parse(args.format.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            super::report(&e);
            return super::EXIT_FAILURE;
        }
    };
    let host = HostInfo::gather(root);
    let containers = ContainerStore::new(root).list();
    let count = |st: Status| containers.iter().filter(|c| c.status == st).count();
    let images = ImageStore::new(root).images().map(|l| l.len()).unwrap_or(0);
    if !format.is_default() {
        let value = crate::host::docker_info(&host, root, &containers, images);
        let (Format::Rows(t) | Format::Table(t)) = format else {
            println!("{value}"); // `json`
            return 0;
        };
        return match t.render(&value, &INFO_SHAPE) {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(e) => {
                super::report(&FormatError(e));
                super::EXIT_FAILURE
            }
        };
    }
    if args.json {
        let v = serde_json::json!({
            "host": host,
            "root_dir": root.dir(),
            "containers": {"total": containers.len(), "running": count(Status::Running), "stopped": count(Status::Exited)},
            "images": images,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return 0;
    }
    let iso = |r: Result<(), crate::host::Unavailable>| match r {
        Ok(()) => "available".to_string(),
        Err(why) => format!("unavailable: {why}"),
    };
    println!("Containers: {}", containers.len());
    println!(" Running: {}", count(Status::Running));
    println!(" Created: {}", count(Status::Created));
    println!(" Exited: {}", count(Status::Exited));
    println!("Images: {images}");
    println!("Server Version: {}", env!("CARGO_PKG_VERSION"));
    println!("Storage Driver: overlayfs (layers unpacked per chain ID, shared)");
    println!("Cgroup Driver: cgroupfs");
    println!(
        "Cgroup Version: {}",
        host.cgroup_mode
            .map(|m| m.describe())
            .unwrap_or("none mounted")
    );
    println!("Isolations:");
    println!(" container: {}", iso(host.container_isolation()));
    println!(" vm: {}", iso(host.vm_isolation()));
    println!("KVM: {}", host.kvm.describe());
    let engines = if host.engines.is_empty() {
        "none found".to_string()
    } else {
        host.engines.join(", ")
    };
    println!("Hypervisor engines: {engines}");
    println!(
        "Guest kernel: {}",
        host.guest_kernel
            .as_deref()
            .unwrap_or("not built (kernel-config/build.sh builds it; CAPSA_KERNEL names it)")
    );
    println!("Kernel Version: {}", host.kernel);
    println!("Operating System: {}", host.os);
    println!("CPUs: {}", host.cpus);
    println!(
        "Total Memory: {:.2}GiB",
        host.memory as f64 / (1u64 << 30) as f64
    );
    println!("Capsa Root Dir: {}", root.dir().display());
    0
}
