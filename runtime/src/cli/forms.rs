//! Docker's two forms of each verb: short (`capsa run`) and grouped (`capsa container run`).
//! A verb both forms share is one variant of one enum ([`ContainerVerb`], [`ImageVerb`]),
//! flattened into the top level and into its group, so the two forms are one parser and
//! one call by construction. Verbs only a group has (`container prune`, `image ls`,
//! `system df`) are the group's own variants.

use super::{containers, images, registry, run, system};
use clap::Subcommand;

/// Verbs on containers, typed as `capsa VERB` or `capsa container VERB`. The descriptions are
/// Docker's.
#[derive(Subcommand, Debug)]
pub enum ContainerVerb {
    /// Create and run a new container from an image.
    #[command(disable_help_flag = true)]
    Run(Box<run::RunArgs>),
    /// Create a new container.
    #[command(disable_help_flag = true)]
    Create(Box<run::RunArgs>),
    /// Start one or more stopped containers.
    Start(containers::StartArgs),
    /// Stop one or more running containers.
    Stop(containers::StopArgs),
    /// Restart one or more containers.
    Restart(containers::StopArgs),
    /// Kill one or more running containers.
    Kill(containers::KillArgs),
    /// Remove one or more containers.
    Rm(containers::RmArgs),
    /// Display the running processes of a container.
    Top(containers::TopArgs),
    /// Fetch the logs of a container.
    Logs(containers::LogsArgs),
    /// Display detailed information on one or more containers.
    Inspect(containers::InspectArgs),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(containers::StatsArgs),
    /// Execute a command in a running container.
    Exec(containers::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(containers::AttachArgs),
    /// Copy files/folders between a container and the local filesystem.
    Cp(containers::CpArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(containers::WaitArgs),
    /// Pause all processes within one or more containers.
    Pause(containers::NamesArgs),
    /// Unpause all processes within one or more containers.
    Unpause(containers::NamesArgs),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// Update configuration of one or more containers.
    Update(containers::UpdateArgs),
    /// List port mappings or a specific mapping for the container.
    Port(containers::PortArgs),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(super::diff::DiffArgs),
    /// Export a container's filesystem as a tar archive.
    Export(super::commit::ExportArgs),
    /// Create a new image from a container's changes.
    Commit(super::commit::CommitArgs),
}

/// `capsa container VERB`.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    #[command(flatten)]
    Verb(ContainerVerb),
    /// List containers.
    #[command(aliases = ["ps", "list"])]
    Ls(containers::PsArgs),
    /// Remove all stopped containers.
    Prune(containers::PruneArgs),
}

/// Verbs on images, typed as `capsa VERB` or `capsa image VERB`. The descriptions are
/// Docker's.
#[derive(Subcommand, Debug)]
pub enum ImageVerb {
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Upload an image to a registry.
    Push(registry::PushArgs),
    /// Build an image from a Dockerfile.
    Build(Box<super::build::BuildArgs>),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(images::TagArgs),
    /// Show the history of an image.
    History(images::HistoryArgs),
    /// Save one or more images to a tar archive (an OCI layout that is also a docker-archive).
    Save(images::SaveArgs),
    /// Load an image from a tar archive or STDIN (OCI layout or docker-archive).
    Load(images::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image.
    Import(images::ImportArgs),
}

/// `capsa image VERB`.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    #[command(flatten)]
    Verb(ImageVerb),
    /// List images.
    #[command(alias = "list")]
    Ls(images::ImagesArgs),
    /// Remove one or more images.
    #[command(alias = "remove")]
    Rm(images::RmiArgs),
    /// Display detailed information on one or more images.
    Inspect(images::ImageInspectArgs),
    /// Remove unused images.
    Prune(images::ImagePruneArgs),
}

/// `capsa system VERB`.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show docker disk usage: images (logical and on disk) and containers.
    Df(images::DfArgs),
    /// Display system-wide information.
    Info(system::InfoArgs),
    /// Remove unused data: stopped containers, unused networks, dangling images.
    Prune(super::prune::SystemPruneArgs),
    /// Get real time events from the server.
    Events(super::events::EventsArgs),
    /// Serve the Docker Engine API (Podman's name for `capsa serve`).
    Service(super::serve::ServeArgs),
    /// The VM templates VM containers start from (ls, rm, warm).
    #[command(subcommand)]
    VmTemplate(super::vm_template::VmTemplateCommand),
}

impl ContainerVerb {
    /// Whether the verb only reads state and prints it (see `Command::only_reports`).
    pub fn only_reports(&self) -> bool {
        matches!(
            self,
            ContainerVerb::Inspect(_)
                | ContainerVerb::Logs(_)
                | ContainerVerb::Port(_)
                | ContainerVerb::Diff(_)
        )
    }
}

impl ImageVerb {
    /// Whether the verb only reads state and prints it.
    pub fn only_reports(&self) -> bool {
        matches!(self, ImageVerb::History(_))
    }
}
