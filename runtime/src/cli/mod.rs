//! The command line: flags named as Docker names them, one file per group of verbs. Only
//! this module prints; the library returns values and typed errors.
//!
//! Exit codes follow Docker: `run`/`create` exit 125 when capsa itself fails, 126/127 when
//! the command cannot be executed / found, else the workload's own; other verbs exit 1 on
//! error.

mod bench;
mod compare;
mod containers;
mod diff;
mod images;
mod network;
mod ps;
mod registry;
mod run;
mod stats;
mod system;
mod terminal;
mod volume;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit code for an error of capsa itself in `run`/`create` (Docker's).
pub const EXIT_ENGINE_ERROR: i32 = 125;
/// Exit code for a failed verb other than `run`.
pub const EXIT_FAILURE: i32 = 1;

/// Run one OCI image as a Linux container or inside a microVM, and compare the two.
#[derive(Parser, Debug)]
#[command(name = "capsa", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// State directory (images, layers, containers).
    #[arg(long, global = true, env = "CAPSA_ROOT", default_value = crate::root::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// A registry that may be reached over plain HTTP (loopback hosts always may).
    #[arg(long = "insecure-registry", global = true)]
    pub insecure_registry: Vec<String>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long = "log-level", global = true, default_value = "warn")]
    pub log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create and run a new container from an image.
    #[command(disable_help_flag = true)]
    Run(run::RunArgs),
    /// Run an image once per isolation (container, and vm with each engine) and compare.
    Compare(compare::CompareArgs),
    /// Measure start latency, memory, density and overhead per isolation and peer.
    Bench(bench::BenchArgs),
    /// Create a new container (its init waits until `start`).
    #[command(disable_help_flag = true)]
    Create(run::RunArgs),
    /// Start one or more created containers.
    Start(containers::StartArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Remove one or more containers.
    Rm(containers::RmArgs),
    /// Block until containers stop, then print their exit codes.
    Wait(containers::WaitArgs),
    /// Attach to a running container's terminal (or follow its output).
    Attach(containers::AttachArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Show the resources containers use (CPU, memory, I/O, processes).
    Stats(containers::StatsArgs),
    /// Copy files between a container and the host.
    Cp(containers::CpArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Stop running containers (SIGTERM, then SIGKILL after a grace period).
    Stop(containers::StopArgs),
    /// Stop and start containers again.
    Restart(containers::StopArgs),
    /// Send a signal to running containers.
    Kill(containers::KillArgs),
    /// Freeze every process of containers.
    Pause(containers::NamesArgs),
    /// Thaw paused containers.
    Unpause(containers::NamesArgs),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// Show the processes of a running container.
    Top(containers::TopArgs),
    /// List a container's published ports.
    Port(containers::PortArgs),
    /// Manage containers (`container prune`).
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Show low-level information on containers as JSON.
    Inspect(containers::InspectArgs),
    /// Import a root file system tarball as an image.
    Import(images::ImportArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Remove images.
    Rmi(images::RmiArgs),
    /// Give an image another name.
    Tag(images::TagArgs),
    /// Show the history of an image.
    History(images::HistoryArgs),
    /// Save images to a tar archive (an OCI layout that is also a docker-archive).
    Save(images::SaveArgs),
    /// Load images from a tar archive (OCI layout or docker-archive).
    Load(images::LoadArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(diff::DiffArgs),
    /// Manage capsa (`system df`, `system info`).
    #[command(subcommand)]
    System(SystemCommand),
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Log in to a registry (credentials are checked, then stored 0600).
    Login(registry::LoginArgs),
    /// Log out from a registry.
    Logout(registry::LogoutArgs),
    /// Search a registry's catalog.
    Search(registry::SearchArgs),
    /// Show client and engine versions.
    Version,
    /// Show what this machine offers: cgroups, KVM, engines, counts.
    Info(system::InfoArgs),
}

#[derive(Subcommand, Debug)]
enum ContainerCommand {
    /// Remove all stopped containers.
    Prune(containers::PruneArgs),
    /// List containers (same as `ps`).
    #[command(alias = "ls")]
    List(containers::PsArgs),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(diff::DiffArgs),
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(images::ImagesArgs),
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(images::RmiArgs),
    /// Give an image another name.
    Tag(images::TagArgs),
    /// Show images as JSON.
    Inspect(images::ImageInspectArgs),
    /// Show the history of an image.
    History(images::HistoryArgs),
    /// Remove unused images.
    Prune(images::ImagePruneArgs),
    /// Save images to a tar archive.
    Save(images::SaveArgs),
    /// Load images from a tar archive.
    Load(images::LoadArgs),
    /// Import a root file system tarball as an image.
    Import(images::ImportArgs),
}

#[derive(Subcommand, Debug)]
enum SystemCommand {
    /// Show disk usage: images (logical and on disk) and containers.
    Df(images::DfArgs),
    /// Show what this machine offers.
    Info(system::InfoArgs),
}

impl Command {
    /// Whether the verb only reads state and prints it: its one pipe is its stdout.
    fn only_reports(&self) -> bool {
        matches!(
            self,
            Command::Ps(_)
                | Command::Container(ContainerCommand::List(_))
                | Command::Inspect(_)
                | Command::Logs(_)
                | Command::Port(_)
                | Command::Images(_)
                | Command::History(_)
                | Command::Image(ImageCommand::Ls(_))
                | Command::Image(ImageCommand::Inspect(_))
                | Command::Image(ImageCommand::History(_))
                | Command::System(_)
                | Command::Diff(_)
                | Command::Container(ContainerCommand::Diff(_))
                | Command::Volume(volume::VolumeCommand::Ls(_))
                | Command::Volume(volume::VolumeCommand::Inspect(_))
                | Command::Version
                | Command::Info(_)
        )
    }
}

/// Parses the command line, runs the verb, and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    registry::set_insecure_registries(cli.insecure_registry.clone());
    let root = match crate::root::StateRoot::open(&cli.root) {
        Ok(r) => r,
        Err(e) => {
            print_error(format_args!("state directory {}: {e}", cli.root.display()));
            return EXIT_ENGINE_ERROR;
        }
    };
    // A report whose reader is gone ends quietly, as other command-line tools do
    // (`capsa ps | head -1`). Every other verb keeps Rust's default, SIGPIPE ignored: they
    // write to pipes and sockets of their own (a `cp` child, a VM's monitor, a registry),
    // and a reader that goes away there is an error to report and clean up after, not a
    // reason to die in the middle.
    if cli.command.only_reports() {
        crate::linux::sys::set_broken_pipe_kills(true);
    }
    match cli.command {
        Command::Run(a) => run::run(&root, a, false),
        Command::Create(a) => run::run(&root, a, true),
        Command::Compare(a) => compare::compare(&cli.root, a),
        Command::Bench(a) => bench::bench(&root, a),
        Command::Start(a) => containers::start(&root, a),
        Command::Ps(a) => containers::ps(&root, a),
        Command::Rm(a) => containers::rm(&root, a),
        Command::Wait(a) => containers::wait(&root, a),
        Command::Inspect(a) => containers::inspect(&root, a),
        Command::Exec(a) => containers::exec(&root, a),
        Command::Attach(a) => containers::attach(&root, a),
        Command::Cp(a) => containers::cp(&root, a),
        Command::Stats(a) => containers::stats(&root, a),
        Command::Logs(a) => containers::logs(&root, a),
        Command::Pause(a) => containers::pause(&root, a, true),
        Command::Unpause(a) => containers::pause(&root, a, false),
        Command::Rename(a) => containers::rename(&root, a),
        Command::Top(a) => containers::top(&root, a),
        Command::Port(a) => containers::port(&root, a),
        Command::Container(ContainerCommand::Prune(a)) => containers::prune(&root, a),
        Command::Container(ContainerCommand::List(a)) => containers::ps(&root, a),
        Command::Stop(a) => containers::stop(&root, a),
        Command::Restart(a) => containers::restart(&root, a),
        Command::Kill(a) => containers::kill(&root, a),
        Command::Import(a) => images::import(&root, a),
        Command::Images(a) => images::images(&root, a),
        Command::Pull(a) => registry::pull(&root, a),
        Command::Rmi(a) => images::rmi(&root, a),
        Command::Tag(a) => images::tag(&root, a),
        Command::History(a) => images::history(&root, a),
        Command::Save(a) => images::save(&root, a),
        Command::Load(a) => images::load(&root, a),
        Command::Image(c) => image_command(&root, c),
        Command::Network(c) => network::network(&root, c),
        Command::Volume(c) => volume::volume(&root, c),
        Command::Diff(a) => diff::diff(&root, a),
        Command::Container(ContainerCommand::Diff(a)) => diff::diff(&root, a),
        Command::System(SystemCommand::Df(a)) => images::system_df(&root, a),
        Command::System(SystemCommand::Info(a)) => system::info(&root, a),
        Command::Login(a) => registry::login(&root, a),
        Command::Logout(a) => registry::logout(&root, a),
        Command::Search(a) => registry::search(&root, a),
        Command::Version => system::version(),
        Command::Info(a) => system::info(&root, a),
    }
}

fn image_command(root: &crate::root::StateRoot, command: ImageCommand) -> i32 {
    match command {
        ImageCommand::Ls(a) => images::images(root, a),
        ImageCommand::Pull(a) => registry::pull(root, a),
        ImageCommand::Rm(a) => images::rmi(root, a),
        ImageCommand::Tag(a) => images::tag(root, a),
        ImageCommand::Inspect(a) => images::image_inspect(root, a),
        ImageCommand::History(a) => images::history(root, a),
        ImageCommand::Prune(a) => images::image_prune(root, a),
        ImageCommand::Save(a) => images::save(root, a),
        ImageCommand::Load(a) => images::load(root, a),
        ImageCommand::Import(a) => images::import(root, a),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}

/// Prints one error line, `capsa: <message>`, with control characters escaped: messages
/// quote image fields, registry answers and file names (see [`escape`]).
pub(crate) fn print_error(message: impl std::fmt::Display) {
    eprintln!(
        "capsa: {}",
        crate::printable::escape_controls(&message.to_string())
    );
}

/// Prints `capsa: <error>` with its causes (see [`print_error`]).
pub(crate) fn report(err: &dyn std::error::Error) {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    print_error(msg);
}

/// Prints rows as a table with Docker's spacing (columns padded by three spaces). Cells
/// are escaped (see [`escape`]): a value with a newline or an escape sequence stays in its
/// cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| crate::printable::escape_controls(cell).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_line_definition_is_consistent() {
        // clap checks flag clashes (such as two `-l`) only when a command is first parsed;
        // this makes every subcommand's definition fail here instead of at a user's prompt.
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
