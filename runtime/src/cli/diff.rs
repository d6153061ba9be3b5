//! `diff CONTAINER` (and `container diff`): the container's changes against its image.

use super::{report, EXIT_FAILURE};
use crate::container::{diff, ContainerStore};
use crate::root::StateRoot;
use clap::Args;

/// `diff` flags.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The container (name or ID).
    container: String,
}

/// Prints `A /path`, `C /path`, `D /path` lines, as `docker diff` does.
pub fn diff(root: &StateRoot, args: DiffArgs) -> i32 {
    let store = ContainerStore::new(root);
    match store
        .resolve(&args.container)
        .and_then(|id| diff::diff(&store, &id))
    {
        Ok(changes) => {
            for c in changes {
                let path = c.path.display().to_string();
                println!(
                    "{} {}",
                    c.kind.letter(),
                    crate::printable::escape_controls(&path)
                );
            }
            0
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}
