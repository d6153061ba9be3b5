//! `pull`, `push`, `login`, `logout`, `search`: the verbs that talk to registries, and the
//! pull and push progress display (a bar per layer on a terminal, one line per state change
//! elsewhere, as `docker pull` and `docker push` draw them).

use super::{report, EXIT_FAILURE};
use crate::image::manifest::Platform;
use crate::image::pull::{self, LayerEvent, PullProgress};
use crate::image::push::{self, PushEvent, PushProgress};
use crate::image::registry::auth::{self, Credentials};
use crate::image::registry::{Registry, RegistrySettings};
use crate::image::{reference, ImageError, ImageStore, Reference};
use crate::root::StateRoot;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

/// Hosts given with the global `--insecure-registry` flag.
static INSECURE_FLAG: OnceLock<Vec<String>> = OnceLock::new();

/// Records the global `--insecure-registry` hosts (called once by `cli::main`).
pub fn set_insecure_registries(hosts: Vec<String>) {
    let _ = INSECURE_FLAG.set(hosts);
}

pub use crate::image::registry::SettingsError;

/// Why `login` or `search` could not reach the registry.
#[derive(Debug, thiserror::Error)]
enum ReachError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Registry(#[from] crate::image::registry::RegistryError),
}

/// Registry settings: `--insecure-registry` plus `insecure-registries` of the root's
/// `daemon.json`, the root's `certs.d/`, and its credential file.
pub fn settings(root: &StateRoot) -> Result<RegistrySettings, SettingsError> {
    crate::image::registry::settings(root, INSECURE_FLAG.get().cloned().unwrap_or_default())
}

/// `pull` flags.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Pull the image for this platform: os/arch[/variant] (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
    /// Print only the image's name when done.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// NAME[:TAG|@DIGEST].
    image: String,
}

/// Where pull progress goes: standard output for `pull`, standard error for `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressTo {
    /// `capsa pull`.
    Stdout,
    /// `capsa run`/`create` pulling a missing image (stdout belongs to the workload).
    Stderr,
    /// `-q`.
    Nowhere,
}

/// `pull [--platform P] [-q] NAME[:TAG|@DIGEST]`.
pub fn pull(root: &StateRoot, args: PullArgs) -> i32 {
    let to = if args.quiet {
        ProgressTo::Nowhere
    } else {
        ProgressTo::Stdout
    };
    match pull_image(root, &args.image, args.platform.as_deref(), to) {
        Ok(name) => {
            println!("{name}");
            0
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// Pulls `image` with progress shown on `to`; returns the full name pulled.
pub fn pull_image(
    root: &StateRoot,
    image: &str,
    platform: Option<&str>,
    to: ProgressTo,
) -> Result<String, ImageError> {
    let reference = Reference::parse(image)?;
    let platform = match platform {
        Some(p) => Platform::parse(p).map_err(|e| ImageError::PullFailed {
            image: reference.full(),
            source: Box::new(crate::image::pull::PullError::Manifest(e)),
        })?,
        None => Platform::host(),
    };
    let settings = settings(root).map_err(|e| ImageError::Pull {
        image: reference.full(),
        reason: e.to_string(),
    })?;
    let shown = reference.familiar();
    let what = reference
        .tag
        .clone()
        .or_else(|| reference.digest.clone())
        .unwrap_or_default();
    let display = Display::new(to);
    display.line(&format!(
        "{what}: Pulling from {}",
        reference.path.trim_start_matches("library/")
    ));
    let store = ImageStore::new(root);
    let result = pull::pull(&store, &reference, &platform, &settings, &display);
    display.finish();
    let pulled = result?;
    let digest = pulled
        .repo_digest
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_string();
    display.line(&format!("Digest: {digest}"));
    let status = if pulled.downloaded {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    display.line(&format!("Status: {status} {shown}"));
    Ok(reference.full())
}

/// Pull and push progress for a person: indicatif bars on a terminal, plain lines
/// otherwise.
struct Display {
    to: ProgressTo,
    bars: Option<MultiProgress>,
    /// Each layer's bar and the words it shows last.
    layers: Mutex<HashMap<String, (ProgressBar, String)>>,
    /// Once the bars are done, lines go below them rather than above.
    bars_done: std::sync::atomic::AtomicBool,
}

/// One layer's state as shown: Docker's words, bytes done of a total while moving, and
/// whether it is final.
struct Shown<'a> {
    words: &'a str,
    bytes: Option<(u64, u64)>,
    last: bool,
}

impl Display {
    fn new(to: ProgressTo) -> Display {
        let tty = match to {
            ProgressTo::Stdout => std::io::stdout().is_terminal(),
            ProgressTo::Stderr => std::io::stderr().is_terminal(),
            ProgressTo::Nowhere => false,
        };
        let bars = tty.then(|| {
            let target = match to {
                ProgressTo::Stdout => ProgressDrawTarget::stdout(),
                _ => ProgressDrawTarget::stderr(),
            };
            MultiProgress::with_draw_target(target)
        });
        Display {
            to,
            bars,
            layers: Mutex::new(HashMap::new()),
            bars_done: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Prints one progress line (it quotes what the registry sent: escaped).
    fn line(&self, text: &str) {
        let text = &*crate::printable::escape_controls(text);
        let bars = self
            .bars
            .as_ref()
            .filter(|_| !self.bars_done.load(std::sync::atomic::Ordering::Relaxed));
        match (self.to, bars) {
            (ProgressTo::Nowhere, _) => {}
            (_, Some(bars)) => {
                let _ = bars.println(text);
            }
            (ProgressTo::Stdout, None) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            (ProgressTo::Stderr, None) => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        for (bar, _) in layers.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        self.bars_done
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Shows a layer's new state: its bar redrawn, or a line when the words change (byte
    /// counts would flood a log).
    fn show(&self, short_id: &str, state: Shown<'_>) {
        if self.to == ProgressTo::Nowhere {
            return;
        }
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(multi) = &self.bars else {
            let changed = layers
                .get(short_id)
                .is_none_or(|(_, last)| last != state.words);
            layers.insert(
                short_id.to_string(),
                (ProgressBar::hidden(), state.words.to_string()),
            );
            drop(layers);
            if changed && state.bytes.is_none() {
                self.line(&format!("{short_id}: {}", state.words));
            }
            return;
        };
        let entry = layers.entry(short_id.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(short_id.to_string());
            (bar, String::new())
        });
        let bar = &entry.0;
        let words = &*crate::printable::escape_controls(state.words);
        if let Some((done, total)) = state.bytes {
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix}: {msg} [{bar:50.=> }] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(words.to_string());
        } else if state.last {
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.finish_with_message(words.to_string());
        } else {
            bar.set_message(words.to_string());
        }
        entry.1 = state.words.to_string();
    }
}

impl PullProgress for Display {
    fn layer(&self, short_id: &str, event: LayerEvent) {
        let (words, bytes, last) = match event {
            LayerEvent::AlreadyExists => ("Already exists", None, true),
            LayerEvent::Waiting => ("Pulling fs layer", None, false),
            LayerEvent::Downloading { done, total } => ("Downloading", Some((done, total)), false),
            LayerEvent::Verifying => ("Verifying Checksum", None, false),
            LayerEvent::Complete => ("Pull complete", None, true),
        };
        self.show(short_id, Shown { words, bytes, last });
    }
}

impl PushProgress for Display {
    fn layer(&self, short_id: &str, event: PushEvent) {
        let mounted;
        let (words, bytes, last) = match &event {
            PushEvent::Preparing => ("Preparing", None, false),
            PushEvent::Waiting => ("Waiting", None, false),
            PushEvent::Pushing { done, total } => ("Pushing", Some((*done, *total)), false),
            PushEvent::Pushed => ("Pushed", None, true),
            PushEvent::AlreadyExists => ("Layer already exists", None, true),
            PushEvent::MountedFrom(from) => {
                mounted = format!("Mounted from {from}");
                (mounted.as_str(), None, true)
            }
        };
        self.show(short_id, Shown { words, bytes, last });
    }
}

/// `push` flags.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Push all tags of the repository.
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Print only the names pushed.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// NAME[:TAG].
    image: String,
}

/// `push [-a] [-q] NAME[:TAG]`: the image as stored (same manifest digest), or with `-a`
/// every tag of its repository; progress as `docker push` draws it.
pub fn push(root: &StateRoot, args: PushArgs) -> i32 {
    match push_images(root, &args) {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

fn push_images(root: &StateRoot, args: &PushArgs) -> Result<(), ImageError> {
    let store = ImageStore::new(root);
    let targets = push::targets(&store, &args.image, args.all_tags)?;
    let settings = settings(root).map_err(|e| ImageError::PushFailed {
        image: args.image.clone(),
        source: Box::new(push::PushError::Settings(e)),
    })?;
    let to = if args.quiet {
        ProgressTo::Nowhere
    } else {
        ProgressTo::Stdout
    };
    if let Some(first) = targets.first() {
        Display::new(to).line(&format!(
            "The push refers to repository [{}]",
            first.familiar_repository()
        ));
    }
    for target in &targets {
        let display = Display::new(to);
        let result = push::push(&store, target, &settings, None, &display);
        display.finish();
        let pushed = result?;
        let tag = target.tag.as_deref().unwrap_or_default();
        display.line(&format!(
            "{tag}: digest: {} size: {}",
            pushed.digest, pushed.size
        ));
        if args.quiet {
            println!("{}", target.familiar());
        }
    }
    Ok(())
}

/// `login` flags.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// User name.
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password (prefer --password-stdin: arguments are visible to other users).
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// The registry (default docker.io).
    server: Option<String>,
}

/// `login [-u USER] [-p PASS | --password-stdin] [SERVER]`: checks the credentials against
/// the registry, then stores them (0600).
pub fn login(root: &StateRoot, args: LoginArgs) -> i32 {
    let server = registry_host(args.server.as_deref());
    let Some(username) = args.username.or_else(|| prompt("Username: ")) else {
        super::print_error(format_args!(
            "login to {server}: a user name is required (-u)"
        ));
        return EXIT_FAILURE;
    };
    let password = if args.password_stdin {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut s) {
            super::print_error(format_args!("login to {server}: reading the password: {e}"));
            return EXIT_FAILURE;
        }
        Some(s.trim_end_matches(['\n', '\r']).to_string())
    } else {
        args.password.or_else(|| prompt("Password: "))
    };
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        super::print_error(format_args!(
            "login to {server}: a password is required (-p or --password-stdin)"
        ));
        return EXIT_FAILURE;
    };
    let creds = Credentials { username, password };
    let outcome = settings(root).map_err(ReachError::from).and_then(|s| {
        let reg = Registry::connect(&server, &s, Some(creds.clone()))?;
        Ok(reg.check_login()?)
    });
    if let Err(e) = outcome {
        super::print_error(format_args!("login to {server}: {e}"));
        return EXIT_FAILURE;
    }
    match auth::store_credentials(&root.auth_file(), &server, Some(&creds)) {
        Ok(_) => {
            println!("Login Succeeded");
            0
        }
        Err(e) => {
            super::print_error(format_args!(
                "storing credentials in {}: {e}",
                root.auth_file().display()
            ));
            EXIT_FAILURE
        }
    }
}

/// `logout` flags.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry (default docker.io).
    server: Option<String>,
}

/// `logout [SERVER]`: forgets the stored credentials.
pub fn logout(root: &StateRoot, args: LogoutArgs) -> i32 {
    let server = registry_host(args.server.as_deref());
    match auth::store_credentials(&root.auth_file(), &server, None) {
        Ok(true) => {
            println!("Removing login credentials for {server}");
            0
        }
        Ok(false) => {
            println!("Not logged in to {server}");
            0
        }
        Err(e) => {
            super::print_error(format_args!("{}: {e}", root.auth_file().display()));
            EXIT_FAILURE
        }
    }
}

/// `localhost:5000`, or docker.io for none (and for Docker Hub's legacy index URL).
fn registry_host(server: Option<&str>) -> String {
    let s = server.unwrap_or(reference::DEFAULT_DOMAIN);
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match s {
        "index.docker.io/v1" | "index.docker.io" | "registry-1.docker.io" => {
            reference::DEFAULT_DOMAIN.into()
        }
        other => other.split('/').next().unwrap_or(other).to_string(),
    }
}

fn prompt(text: &str) -> Option<String> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("{text}");
    let mut s = String::new();
    std::io::stdin().read_line(&mut s).ok()?;
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `search` flags.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// At most this many results.
    #[arg(long, default_value_t = 25)]
    limit: usize,
    /// Print only names.
    #[arg(long = "format", value_parser = ["{{.Name}}"])]
    format: Option<String>,
    /// [REGISTRY/]TERM: names in REGISTRY's catalog that contain TERM.
    term: String,
}

/// `search [REGISTRY/]TERM`: the repositories of a registry's catalog (`/v2/_catalog`)
/// whose name contains TERM. Docker Hub has no catalog: a registry must be named.
pub fn search(root: &StateRoot, args: SearchArgs) -> i32 {
    let Some((host, term)) = args
        .term
        .split_once('/')
        .filter(|(h, _)| h.contains('.') || h.contains(':') || *h == "localhost")
    else {
        super::print_error(format_args!(
            "search {:?}: name the registry, as REGISTRY/TERM (Docker Hub's search API \
             is not a registry catalog; capsa searches catalogs only)",
            args.term
        ));
        return EXIT_FAILURE;
    };
    let result = settings(root)
        .map_err(ReachError::from)
        .and_then(|s| Ok(Registry::connect(host, &s, None).and_then(|r| r.catalog())?));
    let names = match result {
        Ok(n) => n,
        Err(e) => {
            super::print_error(format_args!("search {}: {e}", args.term));
            return EXIT_FAILURE;
        }
    };
    let hits: Vec<Vec<String>> = names
        .into_iter()
        .filter(|n| n.contains(term))
        .take(args.limit)
        .map(|n| vec![format!("{host}/{n}"), String::new()])
        .collect();
    if args.format.is_some() {
        for h in hits {
            println!("{}", crate::printable::escape_controls(&h[0]));
        }
    } else {
        super::print_table(&["NAME", "DESCRIPTION"], &hits);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_servers_normalise_to_registry_hosts() {
        assert_eq!(registry_host(None), "docker.io");
        assert_eq!(
            registry_host(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(registry_host(Some("localhost:5000")), "localhost:5000");
        assert_eq!(
            registry_host(Some("http://127.0.0.1:5000/")),
            "127.0.0.1:5000"
        );
    }
}
