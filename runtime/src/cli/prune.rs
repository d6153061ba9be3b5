//! `system prune`: the prunes of containers, networks and images, in the order that frees
//! most (a removed container releases its network and its image), reported as Docker does.

use super::{report, EXIT_FAILURE};
use crate::container::ContainerStore;
use crate::image::{remove, ImageStore};
use crate::printable::escape_controls;
use crate::root::StateRoot;
use clap::Args;

/// `system prune` flags.
#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones.
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
}

/// `system prune [-a] [-f]`: asks first unless `-f`, as Docker does.
pub fn system_prune(root: &StateRoot, args: SystemPruneArgs) -> i32 {
    if !args.force && !confirmed(args.all) {
        return 0;
    }
    let (containers, container_bytes) =
        match crate::container::prune::prune(&ContainerStore::new(root), &|_| true) {
            Ok(done) => done,
            Err(e) => {
                report(&e);
                return EXIT_FAILURE;
            }
        };
    let networks = super::network::prune_unused(root);
    let in_use = super::images::image_uses(root)
        .into_iter()
        .map(|u| u.image)
        .collect();
    let (images, image_bytes) = match remove::prune(&ImageStore::new(root), &in_use, args.all) {
        Ok(done) => done,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    section("Deleted Containers:", containers);
    section(
        "Deleted Networks:",
        networks.iter().map(|n| escape_controls(n)),
    );
    section(
        "Deleted Images:",
        images.iter().map(|r| match r {
            remove::Removal::Untagged(n) => format!("untagged: {}", escape_controls(n)),
            remove::Removal::Deleted(id) => format!("deleted: {id}"),
        }),
    );
    println!(
        "Total reclaimed space: {}",
        crate::timefmt::human_size(container_bytes + image_bytes)
    );
    0
}

/// Docker's warning and question; true when the answer is yes.
fn confirmed(all: bool) -> bool {
    let images = if all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    print!(
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - {images}\n\nAre you sure you want to continue? [y/N] "
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

/// A heading, its lines and a blank line; nothing when there are no lines.
fn section(heading: &str, lines: impl IntoIterator<Item = impl std::fmt::Display>) {
    let mut lines = lines.into_iter().peekable();
    if lines.peek().is_none() {
        return;
    }
    println!("{heading}");
    for line in lines {
        println!("{line}");
    }
    println!();
}
