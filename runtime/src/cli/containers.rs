//! `start`, `ps`, `rm`, `wait`.

use super::run::render_notice;
use super::{report, EXIT_FAILURE};
use crate::api;
use crate::container::sandbox::{has_terminal, Attached, TerminalRun};
use crate::container::{wait as wait_verb, ContainerStore, Status};
use crate::linux::process::exec_fifo::ExecOutcome;
use crate::printable::{escape_controls, escape_json_strings};
use crate::root::StateRoot;
use clap::Args;

/// `start` flags.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach stdout/stderr and wait for the container to exit.
    #[arg(short = 'a', long)]
    attach: bool,
    /// Attach stdin (a container with a terminal).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Keys that detach from the terminal (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Containers (name or ID).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `ps` flags.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only print IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Do not truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Show the N most recently created containers (all states).
    #[arg(short = 'n', long = "last")]
    last: Option<usize>,
    /// Show the latest created container (all states).
    #[arg(short = 'l', long)]
    latest: bool,
    /// Show the size of each container's writable layer.
    #[arg(short = 's', long)]
    size: bool,
    /// Filter: status=, name=, ancestor=, id=.
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format with a Go template ({{.ID}} {{.Names}} ...), `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// `rm` flags.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short = 'v', long = "volumes")]
    volumes: bool,
    /// Containers (name or ID).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `wait` flags.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Containers (name or ID).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `logs` flags.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow the output until the container exits.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Number of lines to show from the end ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show time stamps.
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Show logs since a time (RFC 3339 or Unix) or a duration back (e.g. 10m).
    #[arg(long)]
    since: Option<String>,
    /// The container (name or ID).
    container: String,
}

/// `stop` flags.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container (default: its --stop-timeout, else 10).
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<u64>,
    /// Signal to send first (default SIGTERM).
    #[arg(short = 's', long)]
    signal: Option<String>,
    /// Containers (name or ID).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `kill` flags.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    /// Containers (name or ID).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `logs [-f] [-n N] [-t] [--since T] CONTAINER`.
pub fn logs(root: &StateRoot, args: LogsArgs) -> i32 {
    use crate::container::logs::{logs, parse_since, LogsOptions};
    let store = ContainerStore::new(root);
    let tail = match args.tail.as_str() {
        "all" => None,
        n => match n.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                super::print_error(format_args!("--tail {n:?}: expected a number or \"all\""));
                return EXIT_FAILURE;
            }
        },
    };
    let result = args
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .and_then(|since| {
            let opts = LogsOptions {
                follow: args.follow,
                tail,
                timestamps: args.timestamps,
                since,
            };
            let id = store.resolve(&args.container)?;
            logs(
                &store,
                &id,
                &opts,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `stop [-t SECONDS] [-s SIGNAL] CONTAINER...`.
pub fn stop(root: &StateRoot, args: StopArgs) -> i32 {
    use crate::api::stop;
    use crate::container::kill::parse_signal;
    let store = ContainerStore::new(root);
    let signal = match args.signal.as_deref().map(parse_signal).transpose() {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let timeout = args.time.map(std::time::Duration::from_secs);
    each(&args.containers, |name| {
        let id = store.resolve(name)?;
        stop(&store, &id, signal, timeout).map(|_| ())
    })
}

/// `restart [-t SECONDS] CONTAINER...`: stop, then start again.
pub fn restart(root: &StateRoot, args: StopArgs) -> i32 {
    let store = ContainerStore::new(root);
    let timeout = args.time.map(std::time::Duration::from_secs);
    each(&args.containers, |name| {
        let id = store.resolve(name)?;
        api::stop(&store, &id, None, timeout)?;
        match api::start(&store, &id, &mut render_notice)? {
            ExecOutcome::Started => Ok(()),
            ExecOutcome::Failed(code, message) => {
                Err(crate::container::ContainerError::Exec { code, message })
            }
        }
    })
}

/// `kill [-s SIGNAL] CONTAINER...`.
pub fn kill(root: &StateRoot, args: KillArgs) -> i32 {
    use crate::api::kill;
    use crate::container::kill::parse_signal;
    let store = ContainerStore::new(root);
    let signal = match parse_signal(&args.signal) {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    each(&args.containers, |name| {
        kill(&store, &store.resolve(name)?, signal)
    })
}

/// Applies `verb` to each named container, printing the name on success as Docker does;
/// exit 1 if any failed.
fn each(
    names: &[String],
    verb: impl Fn(&str) -> Result<(), crate::container::ContainerError>,
) -> i32 {
    let mut rc = 0;
    for name in names {
        match verb(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                report(&e);
                rc = EXIT_FAILURE;
            }
        }
    }
    rc
}

/// Flags of the verbs that take only container names (`pause`, `unpause`).
#[derive(Args, Debug)]
pub struct NamesArgs {
    /// Containers (name or ID).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `rename` flags.
#[derive(Args, Debug)]
pub struct RenameArgs {
    /// The container (name or ID).
    container: String,
    /// Its new name.
    new_name: String,
}

/// `update` flags: the limits and restart policy a container can change while it exists.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit.
    #[arg(short = 'm', long = "memory")]
    memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    cpus: Option<String>,
    /// Tune container pids limit (set -1 for unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<String>,
    /// Restart policy to apply when a container exits.
    #[arg(long)]
    restart: Option<String>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares", allow_hyphen_values = true)]
    cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1).
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Memory nodes in which to allow execution (0-3, 0,1).
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Memory plus swap limit: a size, or -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Block I/O relative weight, 10 to 1000.
    #[arg(long = "blkio-weight", allow_hyphen_values = true)]
    blkio_weight: Option<i64>,
    /// The containers (names or IDs).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `port` arguments.
#[derive(Args, Debug)]
pub struct PortArgs {
    /// The container.
    container: String,
    /// Only this private port: PORT[/PROTO].
    private_port: Option<String>,
}

/// `port CONTAINER [PORT[/PROTO]]`: `80/tcp -> 0.0.0.0:8080` lines, or the host addresses
/// of one port.
pub fn port(root: &StateRoot, args: PortArgs) -> i32 {
    let store = ContainerStore::new(root);
    let state = match store
        .resolve(&args.container)
        .and_then(|id| store.observe(&id))
    {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let wanted = args
        .private_port
        .as_deref()
        .map(|p| match p.split_once('/') {
            Some((port, proto)) => (port.to_string(), proto.to_string()),
            None => (p.to_string(), "tcp".to_string()),
        });
    let mut found = false;
    for m in crate::container::network::active_ports(&state) {
        let private = (m.container_port.to_string(), m.proto.name().to_string());
        match &wanted {
            Some(w) if *w == private => println!("{}:{}", m.host_ip, m.host_port),
            Some(_) => continue,
            None => println!(
                "{}/{} -> {}:{}",
                m.container_port,
                m.proto.name(),
                m.host_ip,
                m.host_port
            ),
        }
        found = true;
    }
    if let (Some((p, proto)), false) = (&wanted, found) {
        super::print_error(format_args!(
            "no public port '{p}/{proto}' published for {}",
            args.container
        ));
        return EXIT_FAILURE;
    }
    0
}

/// `top` flags.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// The container (name or ID).
    container: String,
    /// Options for ps (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

/// `container prune` flags.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
}

/// `pause` (`paused`) or `unpause` CONTAINER....
pub fn pause(root: &StateRoot, args: NamesArgs, paused: bool) -> i32 {
    let store = ContainerStore::new(root);
    each(&args.containers, |name| {
        api::pause(&store, &store.resolve(name)?, paused)
    })
}

/// `rename CONTAINER NEW_NAME`.
pub fn rename(root: &StateRoot, args: RenameArgs) -> i32 {
    let store = ContainerStore::new(root);
    match store
        .resolve(&args.container)
        .and_then(|id| crate::container::rename::rename(&store, &id, &args.new_name))
    {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `update [OPTIONS] CONTAINER...`: prints each container it changed.
pub fn update(root: &StateRoot, args: UpdateArgs) -> i32 {
    use crate::container::{options, tuning};
    let change = (|| {
        Ok::<_, crate::container::ContainerError>(crate::container::update::Update {
            memory: args
                .memory
                .as_deref()
                .map(|m| options::parse_memory("--memory", m))
                .transpose()?,
            cpus: args.cpus.as_deref().map(options::parse_cpus).transpose()?,
            pids_limit: args
                .pids_limit
                .as_deref()
                .map(options::parse_pids_limit)
                .transpose()?,
            restart_policy: args
                .restart
                .as_deref()
                .map(crate::container::restart::RestartPolicy::parse)
                .transpose()?,
            cpu_shares: args
                .cpu_shares
                .map(tuning::parse_cpu_shares)
                .transpose()?
                .flatten(),
            cpuset_cpus: args
                .cpuset_cpus
                .as_deref()
                .map(|c| tuning::parse_cpuset("--cpuset-cpus", c, tuning::online("cpu").as_deref()))
                .transpose()?,
            cpuset_mems: args
                .cpuset_mems
                .as_deref()
                .map(|c| {
                    tuning::parse_cpuset("--cpuset-mems", c, tuning::online("node").as_deref())
                })
                .transpose()?,
            memory_swap: match args.memory_swap.as_deref() {
                None => None,
                Some("-1") => Some(-1),
                Some(v) => Some(options::parse_memory("--memory-swap", v)?),
            },
            memory_reservation: args
                .memory_reservation
                .as_deref()
                .map(|v| options::parse_memory("--memory-reservation", v))
                .transpose()?,
            blkio_weight: args
                .blkio_weight
                .map(tuning::parse_blkio_weight)
                .transpose()?
                .flatten(),
        })
    })();
    let change = match change {
        Ok(c) => c,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let store = ContainerStore::new(root);
    let mut status = 0;
    for name in &args.containers {
        match store
            .resolve(name)
            .and_then(|id| crate::container::update::update(&store, &id, &change))
        {
            Ok(_) => println!("{name}"),
            Err(e) => {
                report(&e);
                status = EXIT_FAILURE;
            }
        }
    }
    status
}

/// `top CONTAINER [ps OPTIONS]`.
pub fn top(root: &StateRoot, args: TopArgs) -> i32 {
    let store = ContainerStore::new(root);
    match store
        .resolve(&args.container)
        .and_then(|id| api::top(&store, &id, &args.ps_args))
    {
        Ok(rows) => {
            for r in rows {
                println!("{}", escape_controls(&r));
            }
            0
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `container prune [-f]`: asks first, as Docker does, unless `-f`.
pub fn prune(root: &StateRoot, args: PruneArgs) -> i32 {
    if !args.force {
        print!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return 0;
        }
    }
    match api::prune(&ContainerStore::new(root), &|_| true) {
        Ok((ids, bytes)) => {
            if !ids.is_empty() {
                println!("Deleted Containers:");
                for id in ids {
                    println!("{id}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                crate::timefmt::human_size(bytes)
            );
            0
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `exec` flags.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep STDIN open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Keys that detach from the terminal (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// User as UID[:GID] or NAME[:GROUP].
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Give extended privileges to the command (every capability)
    #[arg(long)]
    privileged: bool,
    /// The container (name or ID).
    container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `exec [-d] [-i] [-t] [-e] [-u] [-w] CONTAINER COMMAND...`: the command's exit code;
/// 126/127 when it cannot be run; 1 when capsa cannot (as Docker).
pub fn exec(root: &StateRoot, args: ExecArgs) -> i32 {
    use crate::api::exec;
    use crate::container::exec::ExecOptions;
    use crate::container::ContainerError;
    let store = ContainerStore::new(root);
    let opts = ExecOptions {
        detach: args.detach,
        interactive: args.interactive,
        tty: args.tty,
        merged_output: crate::container::relay::caller_output_merged(),
        env: args.env,
        user: args.user,
        workdir: args.workdir,
        privileged: args.privileged,
        command: args.command,
    };
    let keys = if opts.tty {
        match detach_keys(args.detach_keys.as_deref()) {
            Ok(k) => k,
            Err(rc) => return rc,
        }
    } else {
        Vec::new()
    };
    let result = store
        .resolve(&args.container)
        .and_then(|id| exec(&store, &id, &opts))
        .and_then(|session| match session {
            None => Ok(0),
            Some(session) => {
                Ok(super::terminal::run(session, opts.interactive, &keys)?.unwrap_or(0))
            }
        });
    match result {
        Ok(code) => code,
        Err(ContainerError::Exec { code, message }) => {
            super::print_error(format_args!("{message}"));
            code
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `stats` flags.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Show all containers (default: running only).
    #[arg(short = 'a', long)]
    all: bool,
    /// Format with a Go template ({{.Name}} {{.MemUsage}} ...), `table TEMPLATE` or `json`.
    #[arg(long)]
    format: Option<String>,
    /// Containers (default: all running).
    containers: Vec<String>,
}

/// `stats [--no-stream] [-a] [--format T] [CONTAINER...]`.
pub fn stats(root: &StateRoot, args: StatsArgs) -> i32 {
    use crate::container::stats::targets;
    let store = ContainerStore::new(root);
    let format = match crate::template::format::Format::parse(args.format.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let chosen = if args.containers.is_empty() {
        targets(&store, args.all)
    } else {
        let mut list = Vec::new();
        for name in &args.containers {
            match store.resolve(name).and_then(|id| store.observe(&id)) {
                Ok(s) => list.push(s),
                Err(e) => {
                    report(&e);
                    return EXIT_FAILURE;
                }
            }
        }
        list
    };
    loop {
        let usage = api::stats(&chosen, std::time::Duration::from_millis(500));
        if !args.no_stream {
            print!("\x1b[2J\x1b[H"); // clear the screen, as docker stats redraws
        }
        if let Err(e) = super::stats::print(&usage, &format) {
            report(&e);
            return EXIT_FAILURE;
        }
        if args.no_stream {
            return 0;
        }
    }
}

/// `cp` flags.
#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    archive: bool,
    /// CONTAINER:SRC_PATH or SRC_PATH (`-`: a tar stream on stdin).
    src: String,
    /// CONTAINER:DEST_PATH or DEST_PATH (`-`: a tar stream on stdout).
    dest: String,
}

/// `cp CONTAINER:SRC DEST` or `cp SRC CONTAINER:DEST`.
pub fn cp(root: &StateRoot, args: CpArgs) -> i32 {
    use crate::api::{copy_in, copy_out};
    use crate::container::cp::{CopyDest, CopySource, Location};
    use crate::container::ContainerError;
    let store = ContainerStore::new(root);
    let result = match (Location::parse(&args.src), Location::parse(&args.dest)) {
        (Location::Container(c, src), Location::Host(dest)) => store.resolve(&c).and_then(|id| {
            let mut stdout = std::io::stdout();
            let dest = if dest == std::path::Path::new("-") {
                CopyDest::Tar(&mut stdout)
            } else {
                CopyDest::Path(&dest)
            };
            copy_out(&store, &id, &src, dest, args.archive)
        }),
        (Location::Host(src), Location::Container(c, dest)) => store.resolve(&c).and_then(|id| {
            let mut stdin = std::io::stdin();
            let src = if src == std::path::Path::new("-") {
                CopySource::Tar(&mut stdin)
            } else {
                CopySource::Path(&src)
            };
            copy_in(&store, &id, src, &dest, args.archive)
        }),
        _ => Err(ContainerError::InvalidArgument(
            "cp: exactly one of the two paths must name a container (CONTAINER:PATH)".into(),
        )),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `inspect` flags.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output with a Go template ({{.State.Pid}}, {{json .Config}}).
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Only look at this kind of object: container or image.
    #[arg(long = "type", value_parser = ["container", "image"])]
    kind: Option<String>,
    /// Containers or images (name or ID); containers are looked up first, as Docker does.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `inspect [-f TEMPLATE] NAME...`: a JSON array, or one rendered line per object.
pub fn inspect(root: &StateRoot, args: InspectArgs) -> i32 {
    let store = ContainerStore::new(root);
    let images = crate::image::ImageStore::new(root);
    let mut values = Vec::new();
    let mut rc = 0;
    for name in &args.containers {
        let as_container = || store.resolve(name).and_then(|id| api::inspect(&store, &id));
        let as_image = || -> Result<serde_json::Value, Box<dyn std::error::Error>> {
            let image = images.resolve(name)?;
            Ok(crate::image::inspect::inspect(&images, &image)?)
        };
        let found: Result<serde_json::Value, Box<dyn std::error::Error>> =
            match args.kind.as_deref() {
                Some("image") => as_image(),
                Some(_) => as_container().map_err(Into::into),
                None => match as_container() {
                    Err(crate::container::ContainerError::NotFound(_)) => {
                        as_image().map_err(|_| format!("No such object: {name}").into())
                    }
                    other => other.map_err(Into::into),
                },
            };
        match found {
            Ok(v) => values.push(v),
            Err(e) => {
                report(e.as_ref());
                rc = EXIT_FAILURE;
            }
        }
    }
    if print_inspected(&values, args.format.as_deref()) != 0 {
        return EXIT_FAILURE;
    }
    rc
}

/// Prints inspected objects: a pretty JSON array (no format, or `json`), or one line per
/// object from a Go template (see crate::template; errors in Docker's words, exit 1).
pub fn print_inspected(values: &[serde_json::Value], format: Option<&str>) -> i32 {
    use crate::template::format::{InspectFormatError, INSPECT};
    let template = match format.filter(|f| !f.is_empty() && *f != "json") {
        None => {
            println!(
                "{}",
                serde_json::to_string_pretty(values).unwrap_or_default()
            );
            return 0;
        }
        Some(text) => match crate::template::Template::parse(text) {
            Ok(t) => t,
            Err(e) => {
                report(&InspectFormatError(e));
                return EXIT_FAILURE;
            }
        },
    };
    for v in values {
        match template.render(&escape_json_strings(v), &INSPECT) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                report(&InspectFormatError(e));
                return EXIT_FAILURE;
            }
        }
    }
    0
}

/// Attaches to a terminal container (and starts it when `start_it`); returns its exit code
/// when it ends, None when the user detached.
pub fn attach_and_start(
    store: &ContainerStore,
    id: &str,
    stdin: bool,
    keys: &[u8],
    start_it: bool,
) -> Result<Option<i32>, crate::container::ContainerError> {
    // A terminal, or (`--log-driver none`) the output pipes: both on the attach socket.
    let session = match has_terminal(store, id) {
        true => api::terminal_session(store, id)?,
        false => api::input_session(store, id)?,
    };
    if start_it {
        if let ExecOutcome::Failed(code, message) = api::start(store, id, &mut render_notice)? {
            return Err(crate::container::ContainerError::Exec { code, message });
        }
    }
    super::terminal::run(session, stdin, keys)
}

/// `attach` flags.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Keys that detach from the terminal (default ctrl-p,ctrl-q).
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// The container (name or ID).
    container: String,
}

fn detach_keys(spec: Option<&str>) -> Result<Vec<u8>, i32> {
    match spec.map(super::terminal::parse_detach_keys).transpose() {
        Ok(k) => Ok(k.unwrap_or_else(|| super::terminal::DEFAULT_DETACH_KEYS.to_vec())),
        Err(e) => {
            super::print_error(format_args!("{e}"));
            Err(EXIT_FAILURE)
        }
    }
}

/// `attach CONTAINER`: the terminal of a `-t` container, or the output of another one.
pub fn attach(root: &StateRoot, args: AttachArgs) -> i32 {
    let store = ContainerStore::new(root);
    let keys = match detach_keys(args.detach_keys.as_deref()) {
        Ok(k) => k,
        Err(rc) => return rc,
    };
    let result = store.resolve(&args.container).and_then(|id| {
        match api::attach(&store, &id, !args.no_stdin)? {
            Attached::Session(session) => super::terminal::run(session, !args.no_stdin, &keys),
            Attached::Log { seen } => {
                let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
                Ok(wait_verb::follow_log(&store, &id, seen, false, &mut out, &mut err)?.exit_code)
            }
        }
    });
    match result {
        Ok(code) => code.unwrap_or(0),
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `start [-a] [-i] CONTAINER...`.
pub fn start(root: &StateRoot, args: StartArgs) -> i32 {
    let store = ContainerStore::new(root);
    if args.attach || args.interactive {
        if let [name] = &args.containers[..] {
            let keys = match detach_keys(args.detach_keys.as_deref()) {
                Ok(k) => k,
                Err(rc) => return rc,
            };
            if let Ok(id) = store.resolve(name) {
                // A terminal some monitor serves on an attach socket (a VM's has none: its
                // output is followed in its log).
                let stopped = store.observe(&id).is_ok_and(|s| {
                    s.status != Status::Running
                        && api::sandbox_of(&s).terminal_run() == TerminalRun::Attach
                });
                let on_socket = has_terminal(&store, &id)
                    || store
                        .observe(&id)
                        .is_ok_and(|s| s.log_driver == crate::container::logfile::Driver::None);
                if on_socket && stopped {
                    // The monitor (new for a stopped container) serves the terminal.
                    let revived = store
                        .observe(&id)
                        .is_ok_and(|s| s.status == Status::Created)
                        || api::prepare_start(&store, &id).is_ok_and(|ready| ready);
                    if revived {
                        return match attach_and_start(&store, &id, args.interactive, &keys, true) {
                            Ok(code) => code.unwrap_or(0),
                            Err(e) => {
                                report(&e);
                                EXIT_FAILURE
                            }
                        };
                    }
                }
            }
        }
    }
    let mut rc = 0;
    for name in &args.containers {
        // `-a` shows what this start prints, not what earlier runs logged.
        let result = store.resolve(name).and_then(|id| {
            let seen = crate::container::logfile_reader::Cursor::at_end(&store.dir(&id).log());
            Ok((api::start(&store, &id, &mut render_notice)?, id, seen))
        });
        match result {
            Ok((ExecOutcome::Started, id, seen)) if args.attach => {
                let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
                match wait_verb::follow_log(&store, &id, seen, false, &mut out, &mut err) {
                    Ok(state) => rc = state.exit_code.unwrap_or(0),
                    Err(e) => {
                        report(&e);
                        rc = EXIT_FAILURE;
                    }
                }
            }
            Ok((ExecOutcome::Started, _, _)) => println!("{name}"),
            Ok((ExecOutcome::Failed(code, msg), _, _)) => {
                super::print_error(format_args!("container {name}: {msg}"));
                rc = code;
            }
            Err(e) => {
                report(&e);
                rc = EXIT_FAILURE;
            }
        }
    }
    rc
}

/// `ps [-a] [-q] [-n N] [-l] [-s] [-f KEY=VALUE] [--format T]`.
pub fn ps(root: &StateRoot, args: PsArgs) -> i32 {
    let store = ContainerStore::new(root);
    let filter = match super::ps::Filter::parse(&args.filter) {
        Ok(f) => f,
        Err(e) => {
            super::print_error(format_args!("{e}"));
            return EXIT_FAILURE;
        }
    };
    let format = match crate::template::format::Format::parse(args.format.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let last = if args.latest { Some(1) } else { args.last };
    let mut shown: Vec<_> = store
        .list()
        .into_iter()
        .filter(|s| args.all || last.is_some() || !filter.is_empty() || s.status == Status::Running)
        .filter(|s| filter.matches(s, &store))
        .collect();
    if let Some(n) = last {
        shown.truncate(n);
    }
    // As Docker: sizes when asked for, or when the template names them.
    let with_size = args.size || args.format.as_deref().is_some_and(|f| f.contains(".Size"));
    let rows: Vec<super::ps::Row> = shown
        .iter()
        .map(|s| {
            super::ps::Row::new(
                s,
                &store,
                args.no_trunc,
                with_size,
                format.could_show("Labels"),
            )
        })
        .collect();
    if args.quiet {
        for r in &rows {
            println!("{}", r.id);
        }
        return 0;
    }
    match super::ps::print(&rows, &format, args.size) {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `rm [-f] CONTAINER...`.
pub fn rm(root: &StateRoot, args: RmArgs) -> i32 {
    let store = ContainerStore::new(root);
    let mut rc = 0;
    for name in &args.containers {
        match store.resolve(name).and_then(|id| match args.volumes {
            true => api::remove_with_volumes(&store, &id, args.force),
            false => api::remove(&store, &id, args.force),
        }) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                report(&e);
                rc = EXIT_FAILURE;
            }
        }
    }
    rc
}

/// `wait CONTAINER...`: prints each exit code.
pub fn wait(root: &StateRoot, args: WaitArgs) -> i32 {
    let store = ContainerStore::new(root);
    let mut rc = 0;
    for name in &args.containers {
        match store.resolve(name).and_then(|id| api::wait(&store, &id)) {
            Ok(state) => println!("{}", state.exit_code.unwrap_or(0)),
            Err(e) => {
                report(&e);
                rc = EXIT_FAILURE;
            }
        }
    }
    rc
}
