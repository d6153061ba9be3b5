//! `volume create|ls|inspect|rm|prune`, Docker's output shapes; and the volumes' rows of
//! `system df`.

use super::{print_table, report, EXIT_ENGINE_ERROR, EXIT_FAILURE};
use crate::container::{volumes as container_volumes, ContainerStore};
use crate::root::StateRoot;
use crate::volume::{Volume, VolumeError, VolumeStore};
use clap::{Args, Subcommand};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::BufRead;

/// `volume` subcommands.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(InspectArgs),
    /// Remove one or more volumes. You cannot remove a volume that is in use by a container.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes.
    Prune(PruneArgs),
}

/// `volume create` flags.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Specify volume driver name.
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    /// Set metadata for a volume.
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options.
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// The volume's name (a random one when none is given).
    name: Option<String>,
}

/// `volume ls` flags.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    quiet: bool,
    /// Provide filter values (e.g. "dangling=true").
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output using a custom template, or "json".
    #[arg(long)]
    format: Option<String>,
}

/// `volume inspect` flags.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template.
    #[arg(short, long)]
    format: Option<String>,
    /// Volumes.
    #[arg(required = true)]
    volumes: Vec<String>,
}

/// `volume rm` flags.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of one or more volumes (a missing one is no error).
    #[arg(short, long)]
    force: bool,
    /// Volumes.
    #[arg(required = true)]
    volumes: Vec<String>,
}

/// `volume prune` flags.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (e.g. "label=<label>").
    #[arg(long)]
    filter: Vec<String>,
}

/// Runs a `volume` subcommand.
pub fn volume(root: &StateRoot, command: VolumeCommand) -> i32 {
    match command {
        VolumeCommand::Create(a) => create(root, a),
        VolumeCommand::Ls(a) => ls(root, a),
        VolumeCommand::Inspect(a) => inspect(root, a),
        VolumeCommand::Rm(a) => rm(root, a),
        VolumeCommand::Prune(a) => prune(root, a),
    }
}

/// Exit code for a volume error: 125 for what the user named wrong (no such volume, a
/// name that cannot be one), 1 for what is refused or failed (in use, I/O).
fn exit_code(e: &VolumeError) -> i32 {
    match e {
        VolumeError::NotFound(_) | VolumeError::InvalidName { .. } => EXIT_ENGINE_ERROR,
        _ => EXIT_FAILURE,
    }
}

fn fail(e: VolumeError) -> i32 {
    report(&e);
    exit_code(&e)
}

/// `KEY=VALUE` (or `KEY`) flags as a map.
fn labels(values: &[String]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

fn create(root: &StateRoot, args: CreateArgs) -> i32 {
    if args.driver != "local" {
        super::print_error(format_args!(
            "create {}: volume driver {:?} is not available: only \"local\" exists",
            args.name.as_deref().unwrap_or(""),
            args.driver
        ));
        return EXIT_ENGINE_ERROR;
    }
    if let Some(o) = args.opt.first() {
        super::print_error(format_args!(
            "create: driver option {o:?} is not supported: capsa's local volumes are directories of the store (or a VM's disk image) and take no options"
        ));
        return EXIT_ENGINE_ERROR;
    }
    let store = VolumeStore::new(root);
    let made = store
        .lock()
        .and_then(|locked| locked.create(args.name.as_deref(), &labels(&args.label)));
    match made {
        Ok((v, _)) => {
            println!("{}", v.record.name);
            0
        }
        Err(e) => fail(e),
    }
}

fn inspect(root: &StateRoot, args: InspectArgs) -> i32 {
    let store = VolumeStore::new(root);
    let mut values = Vec::new();
    let mut rc = 0;
    for name in &args.volumes {
        match store.get(name) {
            Ok(v) => values.push(v.docker_json()),
            Err(e) => rc = fail(e),
        }
    }
    let printed = super::containers::print_inspected(&values, args.format.as_deref());
    if printed != 0 {
        return EXIT_FAILURE;
    }
    rc
}

/// One `volume ls` filter.
enum Filter {
    Dangling(bool),
    Name(String),
    Label(String, Option<String>),
    Driver(String),
}

/// A `volume ls`/`prune` filter that is not Docker's (its words).
#[derive(Debug, thiserror::Error)]
enum FilterError {
    /// Holds the value as given.
    #[error("bad format of filter (expected name=value): {0}")]
    NotKeyValue(String),
    /// Holds the value given.
    #[error("invalid filter 'dangling={0}'")]
    Dangling(String),
    /// Holds the key given.
    #[error("invalid filter '{0}'")]
    Key(String),
}

fn parse_filter(value: &str) -> Result<Filter, FilterError> {
    let (key, val) = value
        .split_once('=')
        .ok_or_else(|| FilterError::NotKeyValue(value.to_string()))?;
    match key {
        "dangling" => match val {
            "true" | "1" => Ok(Filter::Dangling(true)),
            "false" | "0" => Ok(Filter::Dangling(false)),
            _ => Err(FilterError::Dangling(val.to_string())),
        },
        "name" => Ok(Filter::Name(val.to_string())),
        "driver" => Ok(Filter::Driver(val.to_string())),
        "label" => Ok(match val.split_once('=') {
            Some((k, v)) => Filter::Label(k.to_string(), Some(v.to_string())),
            None => Filter::Label(val.to_string(), None),
        }),
        _ => Err(FilterError::Key(key.to_string())),
    }
}

impl Filter {
    fn keeps(&self, v: &Volume, used: bool) -> bool {
        match self {
            Filter::Dangling(d) => *d != used,
            Filter::Name(n) => v.record.name.contains(n.as_str()),
            Filter::Driver(d) => d == "local",
            Filter::Label(k, want) => v
                .record
                .labels
                .get(k)
                .is_some_and(|have| want.as_ref().is_none_or(|w| w == have)),
        }
    }
}

fn ls(root: &StateRoot, args: LsArgs) -> i32 {
    // A template that does not parse is refused before anything is read.
    let format = match crate::template::format::Format::parse(args.format.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            super::report(&e);
            return EXIT_FAILURE;
        }
    };
    let filters = match args
        .filter
        .iter()
        .map(|f| parse_filter(f))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(f) => f,
        Err(e) => {
            super::print_error(e);
            return EXIT_FAILURE;
        }
    };
    let users = container_volumes::users(&ContainerStore::new(root));
    let volumes: Vec<Volume> = VolumeStore::new(root)
        .list()
        .into_iter()
        .filter(|v| {
            let used = users.get(&v.record.name).is_some_and(|u| !u.is_empty());
            filters.iter().all(|f| f.keeps(v, used))
        })
        .collect();
    if args.quiet {
        for v in &volumes {
            println!("{}", v.record.name);
        }
        return 0;
    }
    let rows: Vec<serde_json::Value> = volumes.iter().map(volume_row).collect();
    match format.render(&rows, &crate::template::format::VOLUME_ROWS) {
        Ok(Some(text)) => print!("{text}"),
        Ok(None) => {
            let cells: Vec<Vec<String>> = volumes
                .iter()
                .map(|v| vec!["local".to_string(), v.record.name.clone()])
                .collect();
            print_table(&["DRIVER", "VOLUME NAME"], &cells);
        }
        Err(e) => {
            super::report(&e);
            return EXIT_FAILURE;
        }
    }
    0
}

/// A volume as `volume ls --format` sees it (Docker's field names).
fn volume_row(v: &Volume) -> serde_json::Value {
    let labels: Vec<String> = v
        .record
        .labels
        .iter()
        .map(|(k, val)| format!("{k}={val}"))
        .collect();
    json!({
        "Availability": "N/A",
        "Driver": "local",
        "Group": "N/A",
        "Labels": labels.join(","),
        "Links": "N/A",
        "Mountpoint": v.mountpoint().display().to_string(),
        "Name": v.record.name,
        "Scope": "local",
        "Size": "N/A",
        "Status": "N/A",
    })
}

fn rm(root: &StateRoot, args: RmArgs) -> i32 {
    let store = VolumeStore::new(root);
    let locked = match store.lock() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let users = container_volumes::users(&ContainerStore::new(root));
    let mut rc = 0;
    for name in &args.volumes {
        match locked.remove(name, &users) {
            Ok(()) => println!("{name}"),
            Err(VolumeError::NotFound(_)) if args.force => {}
            Err(e) => rc = fail(e),
        }
    }
    rc
}

/// Asks Docker's question on the terminal; true when the answer is yes.
fn confirmed(all: bool) -> bool {
    let what = if all {
        "all local volumes not used by at least one container"
    } else {
        "anonymous local volumes not used by at least one container"
    };
    print!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

fn prune(root: &StateRoot, args: PruneArgs) -> i32 {
    let mut label = None;
    for f in &args.filter {
        match parse_filter(f) {
            Ok(Filter::Label(k, v)) => label = Some((k, v)),
            Ok(_) => {
                super::print_error(format_args!("invalid filter {f:?} for prune (label= only)"));
                return EXIT_FAILURE;
            }
            Err(e) => {
                super::print_error(e);
                return EXIT_FAILURE;
            }
        }
    }
    if !args.force && !confirmed(args.all) {
        return 0;
    }
    let store = VolumeStore::new(root);
    let locked = match store.lock() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut users = container_volumes::users(&ContainerStore::new(root));
    if let Some((k, want)) = &label {
        // Volumes the filter does not select count as in use: prune leaves them.
        for v in store.list() {
            let keeps = Filter::Label(k.clone(), want.clone()).keeps(&v, false);
            if !keeps {
                users.entry(v.record.name).or_default().push(String::new());
            }
        }
    }
    let removed = locked.prune(args.all, &users);
    if !removed.is_empty() {
        println!("Deleted Volumes:");
        for (name, _) in &removed {
            println!("{name}");
        }
        println!();
    }
    let total: u64 = removed.iter().map(|(_, size)| size).sum();
    println!(
        "Total reclaimed space: {}",
        crate::timefmt::human_size(total)
    );
    0
}

/// `system df`'s "Local Volumes" row: TYPE, TOTAL, ACTIVE, SIZE, RECLAIMABLE.
pub fn df_row(root: &StateRoot) -> Vec<String> {
    let users = container_volumes::users(&ContainerStore::new(root));
    let volumes = VolumeStore::new(root).list();
    let mut active = 0;
    let (mut size, mut reclaimable) = (0u64, 0u64);
    for v in &volumes {
        let bytes = v.size();
        size += bytes;
        if users.get(&v.record.name).is_some_and(|u| !u.is_empty()) {
            active += 1;
        } else {
            reclaimable += bytes;
        }
    }
    let h = crate::timefmt::human_size;
    let pct = (reclaimable * 100).checked_div(size).unwrap_or(0);
    vec![
        "Local Volumes".into(),
        volumes.len().to_string(),
        active.to_string(),
        h(size),
        format!("{} ({pct}%)", h(reclaimable)),
    ]
}

/// `system df -v`'s volume table: VOLUME NAME, LINKS (containers using it), SIZE.
pub fn df_verbose(root: &StateRoot) {
    let users = container_volumes::users(&ContainerStore::new(root));
    let rows: Vec<Vec<String>> = VolumeStore::new(root)
        .list()
        .iter()
        .map(|v| {
            let links = users.get(&v.record.name).map_or(0, Vec::len);
            vec![
                v.record.name.clone(),
                links.to_string(),
                crate::timefmt::human_size(v.size()),
            ]
        })
        .collect();
    println!("\nLocal Volumes space usage:\n");
    print_table(&["VOLUME NAME", "LINKS", "SIZE"], &rows);
}
