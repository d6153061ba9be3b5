//! `capsa bench`: flags to `bench::BenchOptions`, the run, the files and the summary.

use std::path::PathBuf;

use clap::Args;

use crate::bench::{self, BenchOptions};
use crate::root::StateRoot;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// capsa isolations to measure: container, vm (each VM restored from the VM template),
    /// vm-cold (each VM boots its kernel)
    #[arg(long, value_delimiter = ',', default_value = "container,vm,vm-cold")]
    isolation: Vec<String>,
    /// Peers to measure beside capsa (one missing here is reported, not dropped)
    #[arg(long, value_delimiter = ',', default_value = "runc,runsc,qemu")]
    peers: Vec<String>,
    /// The image every subject runs
    #[arg(long, default_value = "busybox")]
    image: String,
    /// Start-latency runs per subject after warm-up (default 100; 50 for VMs under TCG)
    #[arg(long)]
    runs: Option<usize>,
    /// Scenarios to run: start, memory, density, overhead, isolation (default: all)
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Fewer runs, steps and bytes: the whole suite in about 3 minutes
    #[arg(long)]
    quick: bool,
    /// Where bench.json, bench.md and the plots go
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// An earlier bench.json: print ratios and flag changes beyond the run-to-run noise
    #[arg(long = "compare-to")]
    compare_to: Option<PathBuf>,
    /// VM engine for capsa's vm isolation: capsa or qemu (default: chosen as `run` does)
    #[arg(long)]
    vmm: Option<String>,
    /// Cgroup parent of every instance capsa and the OCI peers start
    #[arg(long = "cgroup-parent")]
    cgroup_parent: Option<String>,
}

pub fn bench(root: &StateRoot, args: BenchArgs) -> i32 {
    // It runs containers and removes them at the end: a closed output must not stop it.
    crate::linux::sys::set_broken_pipe_kills(false);
    // Read first: a bad --compare-to should not cost a whole run.
    let previous = match &args.compare_to {
        Some(p) => match bench::compare::load(p) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!(
                    "capsa bench: --compare-to {}",
                    crate::printable::escape_controls(&e.to_string())
                );
                return super::EXIT_FAILURE;
            }
        },
        None => None,
    };
    if let Some(parent) = &args.cgroup_parent {
        if let Err(e) = crate::container::options::check_cgroup_parent(parent) {
            eprintln!(
                "capsa bench: {}",
                crate::printable::escape_controls(&e.to_string())
            );
            return super::EXIT_FAILURE;
        }
    }
    let opts = BenchOptions {
        isolations: args.isolation,
        peers: args.peers.into_iter().filter(|p| !p.is_empty()).collect(),
        image: args.image,
        runs: args.runs,
        scenarios: args.scenario,
        quick: args.quick,
        vmm: args.vmm,
        cgroup_parent: args.cgroup_parent,
        command: std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" "),
    };
    let report = match bench::run(root, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "capsa bench: {}",
                crate::printable::escape_controls(&e.to_string())
            );
            return super::EXIT_FAILURE;
        }
    };
    print!("{}", bench::markdown::terminal_summary(&report));
    print!("{}", bench::markdown::isolation_summary(&report));
    match bench::write(&report, &args.out) {
        Ok(files) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!("report: {}", names.join(", "));
        }
        Err(e) => {
            eprintln!(
                "capsa bench: writing the report: {}",
                crate::printable::escape_controls(&e.to_string())
            );
            return super::EXIT_FAILURE;
        }
    }
    if let (Some(old), Some(path)) = (previous, &args.compare_to) {
        print!(
            "{}",
            bench::compare::render(path, &bench::compare::changes(&old, &report))
        );
    }
    0
}
