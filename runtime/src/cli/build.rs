//! `build` (also `image build`): an image from a Dockerfile, its steps printed as Docker's
//! legacy builder prints them.

use super::{report, EXIT_FAILURE};
use crate::build::{BuildError, BuildEvent, BuildOptions, Context, StdinArgs, MAX_STDIN_ARGS};
use crate::container::session::Stream;
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
    /// Set the networking mode for the RUN instructions during build (bridge, none, or a
    /// user-defined network).
    #[arg(long, default_value = "default")]
    network: String,
    /// Add a custom host-to-IP mapping (host:ip).
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Size of /dev/shm.
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// Images to consider as cache sources.
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// Print progress as the Engine API's JSON lines (what `POST /build` answers).
    #[arg(long, hide = true)]
    json_lines: bool,
    /// Read build arguments and labels as one JSON line on STDIN, before the context
    /// (`capsa serve` passes them so, never on the command line).
    #[arg(long, hide = true)]
    args_on_stdin: bool,
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
    let mut progress = Progress {
        out: std::io::stdout().lock(),
        json: args.json_lines,
    };
    let result = options(&args).and_then(|opts| {
        let ctx = match args.context.as_str() {
            "-" => Context::from_tar(std::io::stdin().lock(), &ImageStore::new(root).tmp_dir())?,
            dir => Context::open(std::path::Path::new(dir))?,
        };
        crate::build::build(root, &ctx, &opts, &mut |event| {
            if !quiet {
                progress.event(event);
            }
        })
    });
    let result = result.and_then(|id| match iidfile {
        Some(path) => std::fs::write(&path, &id)
            .map(|()| id)
            .map_err(|e| BuildError::Dockerfile(format!("--iidfile {}: {e}", path.display()))),
        None => Ok(id),
    });
    match result {
        Ok(id) => {
            progress.built(&id, &tags, quiet);
            0
        }
        Err(e) if progress.json => {
            progress.failed(&e);
            EXIT_FAILURE
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
    let network = match crate::net::NetworkMode::parse(&args.network) {
        Ok((crate::net::NetworkMode::Bridge, name)) if name == "bridge" => None,
        Ok((crate::net::NetworkMode::Host, _)) | Err(_) => {
            return Err(invalid(format!(
                "--network {}: builds take bridge, none or a user-defined network",
                args.network
            )))
        }
        Ok((_, name)) => Some(name),
    };
    let shm_size = match &args.shm_size {
        Some(v) => Some(crate::container::tuning::parse_shm_size(v)?),
        None => None,
    };
    let mut opts = BuildOptions {
        target: args.target.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        network,
        shm_size,
        cache_from: args.cache_from.clone(),
        cgroup_parent: args.cgroup_parent.clone(),
        isolation,
        ..BuildOptions::default()
    };
    for t in &args.tag {
        let r = Reference::parse(t)?;
        crate::image::commit::check_name(&r)?;
        opts.tags.push(r);
    }
    for h in &args.add_host {
        match crate::container::options::gateway_host(h)? {
            Some(name) => opts.gateway_hosts.push(name),
            None => opts
                .add_hosts
                .push(crate::container::options::parse_add_host(h)?),
        }
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
    if args.args_on_stdin {
        let passed = stdin_args()?;
        opts.build_args.extend(passed.build_args);
        opts.labels.extend(passed.labels);
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

/// The [`StdinArgs`] line at the start of STDIN; the context follows it there (the line is
/// taken from stdin's own buffer, so what comes after it stays to be read).
fn stdin_args() -> Result<StdinArgs, BuildError> {
    use std::io::{BufRead, Read};
    let bad = |e: String| BuildError::Context(format!("--args-on-stdin: {e}"));
    let mut line = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_ARGS)
        .read_until(b'\n', &mut line)
        .map_err(|e| bad(e.to_string()))?;
    if line.last() != Some(&b'\n') {
        return Err(bad(format!(
            "expected one JSON line of at most {MAX_STDIN_ARGS} bytes"
        )));
    }
    serde_json::from_slice(&line).map_err(|e| bad(e.to_string()))
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Where progress goes: text as Docker's client shows the legacy builder's, or (with
/// `--json-lines`) the Engine API's JSON lines as dockerd's legacy builder sends them,
/// which clients parse (`Successfully built`, the red escapes around a RUN step's
/// stderr, `errorDetail` with the command's exit code).
struct Progress<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Progress<W> {
    fn line(&mut self, value: &serde_json::Value) {
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        let _ = self.out.write_all(&line).and_then(|()| self.out.flush());
    }

    /// Text of the build's output: as is, or one `{"stream"}` line.
    fn stream(&mut self, data: &[u8]) {
        if self.json {
            let text = String::from_utf8_lossy(data);
            self.line(&serde_json::json!({ "stream": text }));
        } else {
            let _ = self.out.write_all(data).and_then(|()| self.out.flush());
        }
    }

    fn event(&mut self, event: BuildEvent) {
        match event {
            // dockerd sends the step and its line end as two messages.
            BuildEvent::Step { index, total, text } if self.json => {
                self.stream(format!("Step {index}/{total} : {text}").as_bytes());
                self.stream(b"\n");
            }
            BuildEvent::Step { index, total, text } => {
                let text = crate::printable::escape_controls(&text);
                self.stream(format!("Step {index}/{total} : {text}\n").as_bytes());
            }
            BuildEvent::Pulling(name) => self.stream(format!("Pulling {name}\n").as_bytes()),
            BuildEvent::Cached => self.stream(b" ---> Using cache\n"),
            BuildEvent::Output(Stream::Stderr, data) if self.json => {
                let text = String::from_utf8_lossy(&data);
                self.stream(format!("\x1b[91m{text}\x1b[0m").as_bytes());
            }
            BuildEvent::Output(_, data) => self.stream(&data),
            BuildEvent::Image(id) => self.stream(format!(" ---> {}\n", short(&id)).as_bytes()),
            BuildEvent::Warning(w) => self.stream(format!("[Warning] {w}\n").as_bytes()),
        }
    }

    /// The end of a build that made image `id`, named `tags`.
    fn built(&mut self, id: &str, tags: &[String], quiet: bool) {
        if self.json {
            self.line(&serde_json::json!({ "aux": { "ID": id } }));
        }
        if quiet {
            return self.stream(format!("{id}\n").as_bytes());
        }
        self.stream(format!("Successfully built {}\n", short(id)).as_bytes());
        for t in tags {
            let name = Reference::parse(t).map(|r| r.full()).unwrap_or_default();
            let name = crate::image::store::familiar_name(&name);
            self.stream(format!("Successfully tagged {name}\n").as_bytes());
        }
    }

    /// A failed build's `{"errorDetail","error"}` line; the code is a RUN step's exit
    /// code, absent otherwise, as dockerd sends it.
    fn failed(&mut self, err: &BuildError) {
        let message = super::error_text(err);
        let mut detail = serde_json::json!({ "message": message });
        if let BuildError::RunFailed { code, .. } = err {
            detail["code"] = serde_json::json!(code);
        }
        self.line(&serde_json::json!({ "errorDetail": detail, "error": message }));
    }
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
