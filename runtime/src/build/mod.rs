//! `capsa build`: an image from a Dockerfile and a context, step by step as Docker's
//! legacy builder makes it. The Dockerfile is read by taiki-e's `parse-dockerfile` crate;
//! `words` expands arguments as Docker's shell lexer does; `context` reads the context
//! beneath its root only, `ignore` applies `.dockerignore`; `containers` runs RUN steps and
//! places COPY/ADD files in build containers whose writable layer is captured as `commit`
//! captures one; `place` puts the files in a container's root; `cache` keys each step's
//! image; `builder` drives the steps (`builder/copy` for COPY/ADD, `builder/text` for the
//! instructions' text). Library code: progress goes out as [`BuildEvent`]s, which the CLI
//! and the API render.

mod builder;
pub mod cache;
mod containers;
pub mod context;
mod ignore;
mod place;
mod words;

pub use builder::build;
pub use context::Context;

use std::collections::BTreeMap;

/// What to build.
#[derive(Debug, Default, Clone)]
pub struct BuildOptions {
    /// The Dockerfile's text when the caller read it (`-f` outside the context).
    pub dockerfile_text: Option<Vec<u8>>,
    /// The Dockerfile's path in the context (`Dockerfile` when None).
    pub dockerfile: Option<String>,
    /// `-t`, every name the result gets.
    pub tags: Vec<crate::image::Reference>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to stop at.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`: FROM images are pulled even when the store has them.
    pub pull: bool,
    /// `--label`, set on the result.
    pub labels: BTreeMap<String, String>,
    /// `--network`: `none` (loopback only), a user-defined network's name, or None for
    /// the default bridge.
    pub network: Option<String>,
    /// `--add-host NAME:IP`: lines of the RUN containers' /etc/hosts.
    pub add_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--add-host NAME:host-gateway`: names given the default bridge's gateway.
    pub gateway_hosts: Vec<String>,
    /// `--shm-size` of the RUN containers' /dev/shm in bytes (Docker's 64 MiB when None).
    pub shm_size: Option<u64>,
    /// `--cache-from`: when given, a cached step counts only if its image is one of these
    /// images or one of their ancestors (as Docker's legacy builder decides).
    pub cache_from: Vec<String>,
    /// `--cgroup-parent` for the build's containers.
    pub cgroup_parent: Option<String>,
    /// `--isolation`: where RUN steps run (a microVM: an untrusted Dockerfile's commands
    /// never run on the host kernel). COPY/ADD run nothing and place files from the host.
    pub isolation: crate::container::Isolation,
}

/// Build arguments and labels handed to a `capsa build -` child as the first line of its
/// stdin, ahead of the context, rather than on its command line, which every local user
/// reads (`ps`): a build argument is often a token (`capsa serve` runs its builds so).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StdinArgs {
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
}

/// Most bytes of the [`StdinArgs`] line (the query they come from is far shorter).
pub const MAX_STDIN_ARGS: u64 = 1 << 20;

/// Progress, in Docker's legacy builder's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// `Step N/M : INSTRUCTION`.
    Step {
        index: usize,
        total: usize,
        text: String,
    },
    /// A FROM image this store lacks is being pulled (its name).
    Pulling(String),
    /// The step's image came from the cache.
    Cached,
    /// What a RUN step printed, and on which stream.
    Output(crate::container::session::Stream, Vec<u8>),
    /// The image a step ended with (its ID).
    Image(String),
    /// Something the user should know (build arguments nobody used).
    Warning(String),
}

/// Why a build failed; each names the step or the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error("dockerfile parse error on line {line}, column {column}: {message}")]
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
    /// The Dockerfile could not be found or read.
    #[error("{0}")]
    Dockerfile(String),
    /// The context could not be read.
    #[error("build context: {0}")]
    Context(String),
    /// A COPY/ADD source is missing or refused.
    #[error("COPY/ADD source {0}")]
    Source(String),
    /// A step cannot be carried out.
    #[error("{step}: {reason}")]
    Step { step: String, reason: String },
    /// A FROM image could not be pulled.
    #[error("{step}")]
    Pull {
        step: String,
        #[source]
        source: crate::image::ImageError,
    },
    /// A RUN step exited with a non-zero code.
    #[error("The command '{command}' returned a non-zero code: {code}")]
    RunFailed { command: String, code: i32 },
    /// `--target` names no stage.
    #[error("failed to reach build target {0} in Dockerfile")]
    NoTarget(String),
    /// `.dockerignore` does not parse.
    #[error(transparent)]
    Ignore(#[from] ignore::IgnoreError),
    /// An argument does not parse.
    #[error(transparent)]
    Word(#[from] words::WordError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    #[error("build cache: {0}")]
    Cache(#[source] std::io::Error),
}
