//! `build` (also `image build`): an image from a Dockerfile, its steps printed as Docker's
//! legacy builder prints them.

use super::{report, EXIT_FAILURE};
use crate::build::{BuildError, BuildEvent, BuildOptions, Context};
use crate::image::{ImageStore, Reference};
use crate::root::StateRoot;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// `build` flags (Docker's).
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag in the "name:tag" format.
    #[arg(short = 't', long = "tag")]
    tag: Vec<String>,
    /// Name of the Dockerfile (Default is "PATH/Dockerfile").
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Set build-time variables.
    #[arg(long = "build-arg")]
    build_arg: Vec<String>,
    /// Set the target build stage to build.
    #[arg(long)]
    target: Option<String>,
    /// Do not use cache when building the image.
    #[arg(long)]
    no_cache: bool,
    /// Always attempt to pull a newer version of the image.
    #[arg(long)]
    pull: bool,
    /// Set metadata for an image.
    #[arg(long)]
    label: Vec<String>,
    /// Set the networking mode for the RUN instructions during build (bridge or none).
    #[arg(long, default_value = "default")]
    network: String,
    /// Suppress the build output and print image ID on success.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Write the image ID to the file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Optional parent cgroup for the container.
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Where RUN steps run: container, or vm (a microVM each).
    #[arg(long, default_value = "container")]
    isolation: String,
    /// Set type of progress output (auto, plain).
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Remove intermediate containers after a successful build (always).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    rm: bool,
    /// Always remove intermediate containers (always).
    #[arg(long)]
    force_rm: bool,
    /// Build context: a directory, or - for a tar archive on STDIN.
    context: String,
}

/// `build [OPTIONS] PATH | -`.
pub fn build(root: &StateRoot, args: BuildArgs) -> i32 {
    let quiet = args.quiet;
    let iidfile = args.iidfile.clone();
    let tags = args.tag.clone();
    let mut out = std::io::stdout().lock();
    let mut on = |event: BuildEvent| {
        if !quiet {
            render(&mut out, event);
        }
    };
    let result = options(&args).and_then(|opts| {
        let ctx = match args.context.as_str() {
            "-" => Context::from_tar(std::io::stdin().lock(), &ImageStore::new(root).tmp_dir())?,
            dir => Context::open(std::path::Path::new(dir))?,
        };
        crate::build::build(root, &ctx, &opts, &mut on)
    });
    match result {
        Ok(id) => {
            if let Some(path) = iidfile {
                if let Err(e) = std::fs::write(&path, &id) {
                    super::print_error(format_args!("--iidfile {}: {e}", path.display()));
                    return EXIT_FAILURE;
                }
            }
            if quiet {
                println!("{id}");
            } else {
                let short = short(&id);
                println!("Successfully built {short}");
                for t in &tags {
                    let name = Reference::parse(t).map(|r| r.full()).unwrap_or_default();
                    println!(
                        "Successfully tagged {}",
                        crate::image::store::familiar_name(&name)
                    );
                }
            }
            0
        }
        Err(e) => {
            let _ = std::io::stdout().flush();
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// The flags as [`BuildOptions`], each checked.
fn options(args: &BuildArgs) -> Result<BuildOptions, BuildError> {
    let invalid =
        |m: String| BuildError::Container(crate::container::ContainerError::InvalidArgument(m));
    let isolation = match args.isolation.as_str() {
        "container" | "default" => crate::container::Isolation::Container,
        "vm" => crate::container::Isolation::Vm,
        other => {
            return Err(invalid(format!(
                "--isolation {other}: expected container or vm"
            )))
        }
    };
    if !matches!(args.progress.as_str(), "auto" | "plain" | "tty") {
        return Err(invalid(format!(
            "--progress {}: expected auto or plain",
            args.progress
        )));
    }
    let network_none = match args.network.as_str() {
        "default" | "bridge" => false,
        "none" => true,
        other => {
            return Err(invalid(format!(
                "--network {other}: builds take bridge or none"
            )))
        }
    };
    let mut opts = BuildOptions {
        target: args.target.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        network_none,
        cgroup_parent: args.cgroup_parent.clone(),
        isolation,
        ..BuildOptions::default()
    };
    for t in &args.tag {
        let r = Reference::parse(t)?;
        crate::image::commit::check_name(&r)?;
        opts.tags.push(r);
    }
    for a in &args.build_arg {
        match a.split_once('=') {
            Some((k, v)) => opts.build_args.insert(k.to_string(), v.to_string()),
            // `--build-arg NAME` passes this process's value, and nothing if it has none.
            None => match std::env::var(a) {
                Ok(v) => opts.build_args.insert(a.clone(), v),
                Err(_) => None,
            },
        };
    }
    for l in &args.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        opts.labels.insert(k.to_string(), v.to_string());
    }
    match (&args.file, args.context.as_str()) {
        (Some(f), "-") => opts.dockerfile = Some(f.clone()),
        (Some(f), _) if f == "-" => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut text)
                .map_err(|e| BuildError::Dockerfile(format!("-f -: {e}")))?;
            opts.dockerfile_text = Some(text);
        }
        (Some(f), _) => {
            let text = std::fs::read(f).map_err(|e| {
                BuildError::Dockerfile(format!("Cannot locate specified Dockerfile: {f}: {e}"))
            })?;
            opts.dockerfile_text = Some(text);
        }
        (None, _) => {}
    }
    Ok(opts)
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// One event as Docker's legacy builder prints it.
fn render(out: &mut impl Write, event: BuildEvent) {
    let _ = match event {
        BuildEvent::Step { index, total, text } => writeln!(
            out,
            "Step {index}/{total} : {}",
            crate::printable::escape_controls(&text)
        ),
        BuildEvent::Pulling(name) => writeln!(out, "Pulling {name}"),
        BuildEvent::Cached => writeln!(out, " ---> CACHED"),
        BuildEvent::Output(data) => out.write_all(&data).and_then(|()| out.flush()),
        BuildEvent::Image(id) => writeln!(out, " ---> {}", short(&id)),
        BuildEvent::Warning(w) => writeln!(out, "[Warning] {w}"),
    };
}

/// `builder` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum BuilderCommand {
    /// Remove build cache.
    Prune(BuilderPruneArgs),
}

/// `builder prune` flags.
#[derive(Args, Debug)]
pub struct BuilderPruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove all unused build cache, not just dangling ones (the same here: every step
    /// image without a name or a container).
    #[arg(short = 'a', long)]
    all: bool,
}

/// `builder prune`: the cache forgotten, its step images without a name or a container
/// removed.
pub fn builder(root: &StateRoot, command: BuilderCommand) -> i32 {
    use std::io::IsTerminal;
    let BuilderCommand::Prune(args) = command;
    let _ = args.all;
    if !args.force && std::io::stdin().is_terminal() {
        eprint!("WARNING! This will remove all dangling build cache.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !answer.trim().eq_ignore_ascii_case("y") {
            return 0;
        }
    }
    let store = ImageStore::new(root);
    let in_use = crate::api::image_uses(&crate::container::ContainerStore::new(root))
        .into_iter()
        .map(|u| u.image)
        .collect();
    match crate::build::cache::Cache::new(root).prune(&store, &in_use) {
        Ok((removed, freed)) => {
            if !removed.is_empty() {
                println!("Deleted build cache objects:");
                for id in &removed {
                    println!("{id}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                crate::timefmt::human_size(freed)
            );
            0
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}
