//! `commit` and `export` (also `container commit`, `container export`): a container's
//! changes as a new image, and its flattened root as a tar.

use super::{report, EXIT_FAILURE};
use crate::container::commit::CommitRequest;
use crate::container::{ContainerError, ContainerStore};
use crate::image::commit::CommitOptions;
use crate::image::Reference;
use crate::root::StateRoot;
use clap::{ArgAction, Args};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `commit` flags (Docker's).
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL).
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// Commit message.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>").
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Pause container during commit.
    #[arg(
        short = 'p',
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true"
    )]
    pause: bool,
    /// The container (name or ID).
    container: String,
    /// The new image's name: REPOSITORY[:TAG].
    reference: Option<String>,
}

/// `commit CONTAINER [REPOSITORY[:TAG]]`: prints the new image's ID.
pub fn commit(root: &StateRoot, args: CommitArgs) -> i32 {
    let store = ContainerStore::new(root);
    let committed = args
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(ContainerError::from)
        .and_then(|name| {
            let id = store.resolve(&args.container)?;
            let request = CommitRequest {
                pause: args.pause,
                image: CommitOptions {
                    changes: args.change,
                    comment: args.message.filter(|m| !m.is_empty()),
                    author: args.author.filter(|a| !a.is_empty()),
                    name,
                    ..CommitOptions::default()
                },
            };
            crate::api::commit(&store, &id, request)
        });
    match committed {
        Ok(id) => {
            println!("{id}");
            0
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// The container (name or ID).
    container: String,
}

/// `export [-o FILE] CONTAINER`: the container's root as a tar.
pub fn export(root: &StateRoot, args: ExportArgs) -> i32 {
    use std::io::IsTerminal;
    let store = ContainerStore::new(root);
    let result = store
        .resolve(&args.container)
        .and_then(|id| match &args.output {
            Some(path) => export_to_file(&store, &id, path),
            None if std::io::stdout().is_terminal() => Err(ContainerError::InvalidArgument(
                "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
            )),
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout());
                crate::api::export(&store, &id, &mut out)?;
                out.flush()
                    .map_err(|e| ContainerError::io(Path::new("-"), e))
            }
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// Writes beside `path` and renames: a failed export leaves no partial archive.
fn export_to_file(store: &ContainerStore, id: &str, path: &Path) -> Result<(), ContainerError> {
    let io = |e| ContainerError::io(path, e);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file());
        crate::api::export(store, id, &mut out)?;
        out.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
