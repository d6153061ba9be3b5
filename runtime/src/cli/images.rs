//! `import`, `images`.

use super::{print_table, report, EXIT_FAILURE};
use crate::image::{import as import_verb, store::display_name, ImageStore, Reference};
use crate::root::StateRoot;
use clap::Args;

/// `import` flags.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL.
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// A tarball (plain or gzip) of a root file system, or - for standard input.
    file: String,
    /// Name for the image: REPOSITORY[:TAG].
    reference: Option<String>,
}

/// `images` flags.
#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Show full IDs.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

/// `import FILE|- [REPOSITORY[:TAG]]`: prints the new image's ID.
pub fn import(root: &StateRoot, args: ImportArgs) -> i32 {
    let name = match args.reference.as_deref().map(Reference::parse).transpose() {
        Ok(n) => n,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let store = ImageStore::new(root);
    match import_verb::import_path(&store, &args.file, name.as_ref(), &args.change) {
        Ok(imported) => {
            println!("{}", imported.id);
            0
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `images`: REPOSITORY, TAG, IMAGE ID, CREATED, SIZE (unpacked size of the layers).
pub fn images(root: &StateRoot, args: ImagesArgs) -> i32 {
    let store = ImageStore::new(root);
    let list = match store.list() {
        Ok(l) => l,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let mut rows = Vec::new();
    for (manifest, rec) in list {
        let full_id = rec.config.trim_start_matches("sha256:").to_string();
        let id = if args.no_trunc {
            rec.config.clone()
        } else {
            full_id[..12.min(full_id.len())].to_string()
        };
        if args.quiet {
            println!("{id}");
            continue;
        }
        let image = store.resolve(&rec.config).ok();
        let size = image.as_ref().map_or(0, |i| i.size());
        let created = image
            .as_ref()
            .and_then(|i| i.config.created().clone())
            .and_then(|c| crate::timefmt::parse_rfc3339(&c))
            .map(|t| format!("{} ago", crate::timefmt::ago(t)))
            .unwrap_or_else(|| "N/A".into());
        let names = if rec.names.is_empty() {
            vec![String::new()]
        } else {
            rec.names.clone()
        };
        for n in names {
            let (repo, tag) = if n.is_empty() {
                ("<none>".into(), "<none>".into())
            } else {
                display_name(&n)
            };
            rows.push(vec![
                repo,
                tag,
                id.clone(),
                created.clone(),
                crate::timefmt::human_size(size),
            ]);
        }
        let _ = manifest;
    }
    if !args.quiet {
        print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
    }
    0
}
