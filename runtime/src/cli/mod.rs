//! The command line: flags named as Docker names them, one file per group of verbs. Only
//! this module prints; the library returns values and typed errors.
//!
//! Exit codes follow Docker: `run`/`create` exit 125 when capsa itself fails, 126/127 when
//! the command cannot be executed / found, else the workload's own; other verbs exit 1 on
//! error.

mod bench;
mod build;
mod commit;
mod compare;
mod completion;
mod containers;
mod diff;
mod docker_help;
mod events;
mod forms;
mod images;
mod network;
mod prune;
mod ps;
mod registry;
mod run;
pub mod runc;
mod serve;
mod stats;
mod system;
mod terminal;
mod usage_error;
mod vm_template;
mod volume;

use clap::{CommandFactory, Parser, Subcommand};
use forms::{ContainerCommand, ContainerVerb, ImageCommand, ImageVerb, SystemCommand};
use std::path::PathBuf;

/// Exit code for an error of capsa itself in `run`/`create` (Docker's), and for a command
/// line that does not parse.
pub const EXIT_ENGINE_ERROR: i32 = 125;
/// Exit code for a failed verb other than `run`.
pub const EXIT_FAILURE: i32 = 1;

/// Run one OCI image as a Linux container or inside a microVM, and compare the two.
#[derive(Parser, Debug)]
#[command(
    name = "capsa",
    version,
    about,
    disable_help_subcommand = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// State directory (images, layers, containers).
    #[arg(long, global = true, env = "CAPSA_ROOT", default_value = crate::root::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// A registry that may be reached over plain HTTP (loopback hosts always may).
    #[arg(long = "insecure-registry", global = true)]
    pub insecure_registry: Vec<String>,
    /// Set the logging level ("error"|"warn"|"info"|"debug"|"trace").
    #[arg(long = "log-level", global = true, default_value = "warn")]
    pub log_level: String,
    #[command(subcommand)]
    command: Command,
}

/// Every verb. Container and image verbs that Docker also groups (`container run`,
/// `image pull`) are the flattened [`ContainerVerb`] and [`ImageVerb`]: see [`forms`].
#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    ContainerVerb(ContainerVerb),
    /// List containers.
    Ps(containers::PsArgs),
    #[command(flatten)]
    ImageVerb(ImageVerb),
    /// List images.
    Images(images::ImagesArgs),
    /// Remove one or more images.
    Rmi(images::RmiArgs),
    /// Run an image once per isolation (container, and vm with each engine) and compare.
    Compare(compare::CompareArgs),
    /// Measure start latency, memory, density and overhead per isolation and peer.
    Bench(bench::BenchArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage capsa (`system df`, `system info`, `system prune`).
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage builds (`builder prune`).
    #[command(subcommand)]
    Builder(build::BuilderCommand),
    /// Log in to a registry (credentials are checked, then stored 0600).
    Login(registry::LoginArgs),
    /// Log out from a registry.
    Logout(registry::LogoutArgs),
    /// Search a registry's catalog.
    Search(registry::SearchArgs),
    /// Show the capsa version information.
    Version,
    /// Display system-wide information: cgroups, KVM, engines, counts.
    Info(system::InfoArgs),
    /// Get real time events from the server.
    Events(events::EventsArgs),
    /// Generate the autocompletion script for the specified shell.
    Completion(completion::CompletionArgs),
    /// Serve the Docker Engine API on a Unix socket (DOCKER_HOST=unix:///run/capsa/capsa.sock).
    Serve(serve::ServeArgs),
}

impl Command {
    /// Whether the verb only reads state and prints it: its one pipe is its stdout.
    fn only_reports(&self) -> bool {
        match self {
            Command::ContainerVerb(v) | Command::Container(ContainerCommand::Verb(v)) => {
                v.only_reports()
            }
            Command::ImageVerb(v) | Command::Image(ImageCommand::Verb(v)) => v.only_reports(),
            Command::Ps(_)
            | Command::Container(ContainerCommand::Ls(_))
            | Command::Images(_)
            | Command::Image(ImageCommand::Ls(_))
            | Command::Image(ImageCommand::Inspect(_))
            | Command::System(SystemCommand::Df(_) | SystemCommand::Info(_))
            | Command::Version
            | Command::Info(_)
            | Command::Volume(volume::VolumeCommand::Ls(_) | volume::VolumeCommand::Inspect(_))
            | Command::Completion(_) => true,
            _ => false,
        }
    }
}

/// Parses the command line, runs the verb, and returns the process exit code.
pub fn main() -> i32 {
    // Before this process opens anything: what its caller left open is no monitor's.
    crate::container::monitor::close_in_monitors(crate::container::monitor::inherited_descriptors());
    completion::answer_if_asked();
    let cli = match Cli::try_parse_from(command_line()) {
        Ok(cli) => cli,
        Err(e) => return usage_error::report(e),
    };
    init_logging(&cli.log_level);
    // Completion scripts are written for a shell, not a store: no state root is needed.
    if let Command::Completion(a) = cli.command {
        return completion::completion(a);
    }
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
    dispatch(&root, &cli.root, cli.command)
}

/// The process's arguments, with Docker's `help` verb read as the flag it stands for:
/// `capsa help run` is `capsa run --help`, `capsa help` is `capsa --help`.
pub(crate) fn command_line() -> Vec<std::ffi::OsString> {
    help_verb_as_flag(std::env::args_os().collect())
}

fn help_verb_as_flag(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    // The global flags that take their value in the next word may come before the verb.
    const GLOBAL_WITH_VALUE: [&str; 3] = ["--root", "--insecure-registry", "--log-level"];
    let mut i = 1;
    while let Some(word) = args.get(i) {
        if GLOBAL_WITH_VALUE.iter().any(|g| word == *g) {
            i += 2;
        } else if word.to_string_lossy().starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    if args.get(i).is_some_and(|a| a == "help") {
        args.remove(i);
        args.push("--help".into());
    }
    args
}

/// The command line's definition as help shows it: the derived one, with Docker's wording
/// on the flags capsa shares with Docker. (Parsing needs no help text: it uses the derived
/// one, and this is built only to show help or to complete.)
fn definition() -> clap::Command {
    docker_help::apply(Cli::command())
}

/// Runs one verb. Both forms of a verb reach the same arm.
fn dispatch(root: &crate::root::StateRoot, root_dir: &std::path::Path, command: Command) -> i32 {
    match command {
        Command::ContainerVerb(v) | Command::Container(ContainerCommand::Verb(v)) => {
            container_verb(root, v)
        }
        Command::ImageVerb(v) | Command::Image(ImageCommand::Verb(v)) => image_verb(root, v),
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => containers::ps(root, a),
        Command::Container(ContainerCommand::Prune(a)) => containers::prune(root, a),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::images(root, a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::rmi(root, a),
        Command::Image(ImageCommand::Inspect(a)) => images::image_inspect(root, a),
        Command::Image(ImageCommand::Prune(a)) => images::image_prune(root, a),
        Command::Info(a) | Command::System(SystemCommand::Info(a)) => system::info(root, a),
        Command::Events(a) | Command::System(SystemCommand::Events(a)) => events::events(root, a),
        Command::System(SystemCommand::Df(a)) => images::system_df(root, a),
        Command::System(SystemCommand::Prune(a)) => prune::system_prune(root, a),
        Command::System(SystemCommand::Service(a)) => serve::serve(root, a),
        Command::Builder(c) => build::builder(root, c),
        Command::System(SystemCommand::VmTemplate(c)) => vm_template::vm_template(root, c),
        Command::Compare(a) => compare::compare(root_dir, a),
        Command::Bench(a) => bench::bench(root, a),
        Command::Network(c) => network::network(root, c),
        Command::Volume(c) => volume::volume(root, c),
        Command::Login(a) => registry::login(root, a),
        Command::Logout(a) => registry::logout(root, a),
        Command::Search(a) => registry::search(root, a),
        Command::Version => system::version(),
        Command::Serve(a) => serve::serve(root, a),
        Command::Completion(a) => completion::completion(a),
    }
}

fn container_verb(root: &crate::root::StateRoot, verb: ContainerVerb) -> i32 {
    match verb {
        ContainerVerb::Run(a) => run::run(root, *a, false),
        ContainerVerb::Create(a) => run::run(root, *a, true),
        ContainerVerb::Start(a) => containers::start(root, a),
        ContainerVerb::Stop(a) => containers::stop(root, a),
        ContainerVerb::Restart(a) => containers::restart(root, a),
        ContainerVerb::Kill(a) => containers::kill(root, a),
        ContainerVerb::Rm(a) => containers::rm(root, a),
        ContainerVerb::Top(a) => containers::top(root, a),
        ContainerVerb::Logs(a) => containers::logs(root, a),
        ContainerVerb::Inspect(a) => containers::inspect(root, a),
        ContainerVerb::Stats(a) => containers::stats(root, a),
        ContainerVerb::Exec(a) => containers::exec(root, a),
        ContainerVerb::Attach(a) => containers::attach(root, a),
        ContainerVerb::Cp(a) => containers::cp(root, a),
        ContainerVerb::Wait(a) => containers::wait(root, a),
        ContainerVerb::Pause(a) => containers::pause(root, a, true),
        ContainerVerb::Unpause(a) => containers::pause(root, a, false),
        ContainerVerb::Rename(a) => containers::rename(root, a),
        ContainerVerb::Update(a) => containers::update(root, a),
        ContainerVerb::Port(a) => containers::port(root, a),
        ContainerVerb::Diff(a) => diff::diff(root, a),
        ContainerVerb::Export(a) => commit::export(root, a),
        ContainerVerb::Commit(a) => commit::commit(root, a),
    }
}

fn image_verb(root: &crate::root::StateRoot, verb: ImageVerb) -> i32 {
    match verb {
        ImageVerb::Pull(a) => registry::pull(root, a),
        ImageVerb::Push(a) => registry::push(root, a),
        ImageVerb::Build(a) => build::build(root, *a),
        ImageVerb::Tag(a) => images::tag(root, a),
        ImageVerb::History(a) => images::history(root, a),
        ImageVerb::Save(a) => images::save(root, a),
        ImageVerb::Load(a) => images::load(root, a),
        ImageVerb::Import(a) => images::import(root, a),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or a reading program gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    print_error(error_text(err));
}

/// `<error>: <cause>: ...`, each cause not already in the text.
pub(crate) fn error_text(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        // A variant that shows text from an image or registry escapes it: a cause already
        // shown that way is not repeated.
        let shown = crate::printable::escape_controls(&text);
        if !msg.contains(&text) && !msg.contains(shown.as_ref() as &str) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
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
    fn help_verb_reads_as_the_help_flag() {
        let words = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            super::help_verb_as_flag(words(&["capsa", "help", "run"])),
            words(&["capsa", "run", "--help"])
        );
        assert_eq!(
            super::help_verb_as_flag(words(&["capsa", "help"])),
            words(&["capsa", "--help"])
        );
        assert_eq!(
            super::help_verb_as_flag(words(&["capsa", "--root", "/r", "help", "ps"])),
            words(&["capsa", "--root", "/r", "ps", "--help"])
        );
        assert_eq!(
            super::help_verb_as_flag(words(&["capsa", "run", "help"])),
            words(&["capsa", "run", "help"])
        );
    }

    #[test]
    fn every_command_line_definition_is_consistent() {
        // clap checks flag clashes (such as two `-l`) only when a command is first parsed;
        // this makes every subcommand's definition fail here instead of at a user's prompt.
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_completion_definition_keeps_every_positional_in_place() {
        // Name candidates are added by rewriting arguments; a positional moved behind a
        // trailing one would make every Tab fail.
        super::completion::command().debug_assert();
    }
}
