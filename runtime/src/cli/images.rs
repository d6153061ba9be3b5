//! The image verbs: `images`, `import`, `rmi`, `tag`, `image inspect`, `history`,
//! `image prune`, `save`, `load`, `system df`.

use super::{print_table, report, EXIT_FAILURE};
use crate::image::reference::familiar;
use crate::image::{
    archive, import as import_verb, inspect, remove, store::display_name, ImageStore, Reference,
};
use crate::printable::escape_controls;
use crate::root::StateRoot;
use crate::template::format::{Format, Rows};
use crate::template::Shape;
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
    /// Show all images (default hides intermediate images).
    #[arg(short = 'a', long)]
    all: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Format with a Go template ({{.Repository}} {{.Tag}} {{.ID}} ...), `table TEMPLATE`,
    /// or `json`.
    #[arg(long)]
    format: Option<String>,
    /// Only images of this repository[:tag].
    repository: Option<String>,
}

/// Docker's `images` rows: its formatter context and the title of each field.
const IMAGE_ROWS: Rows = Rows {
    shape: Shape {
        type_name: Some("*formatter.imageContext"),
        string_maps: &[],
        maps: &[],
    },
    titles: &[
        ("ID", "IMAGE ID"),
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("Digest", "DIGEST"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("Size", "SIZE"),
    ],
};

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

/// `images`: REPOSITORY, TAG, [DIGEST,] IMAGE ID, CREATED, SIZE (unpacked size of all
/// the image's layers, shared ones included: `system df` shows real disk use).
pub fn images(root: &StateRoot, args: ImagesArgs) -> i32 {
    let format = match Format::parse(args.format.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let store = ImageStore::new(root);
    let list = match store.images() {
        Ok(l) => l,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let filter = args.repository.as_deref().map(|r| {
        let parsed = Reference::parse(r).ok();
        let explicit_tag = r.rsplit('/').next().is_some_and(|last| last.contains(':'));
        (parsed, explicit_tag)
    });
    let mut rows = Vec::new();
    let mut seen_ids = std::collections::BTreeSet::new();
    let hidden = match args.all {
        true => Default::default(),
        false => crate::image::store::intermediate(&list),
    };
    for rec in list.into_iter().filter(|r| !hidden.contains(&r.id)) {
        let id = short_or_full(&rec.id, args.no_trunc);
        let image = store.resolve(&rec.id).ok();
        let size = image.as_ref().map_or(0, |i| i.size());
        let created_at = image.as_ref().and_then(|i| i.config.created().clone());
        let created = created_at
            .as_deref()
            .and_then(crate::timefmt::parse_rfc3339)
            .map(|t| format!("{} ago", crate::timefmt::ago(t)))
            .unwrap_or_else(|| "N/A".into());
        let names: Vec<String> = if rec.names.is_empty() {
            vec![String::new()]
        } else {
            rec.names.clone()
        };
        for n in names {
            if let Some((want, explicit_tag)) = &filter {
                let Some(want) = want else { continue };
                let Ok(have) = Reference::parse(&n) else {
                    continue;
                };
                if have.repository() != want.repository() || (*explicit_tag && have.tag != want.tag)
                {
                    continue;
                }
            }
            if args.quiet {
                if seen_ids.insert(id.clone()) {
                    println!("{id}");
                }
                continue;
            }
            let (repo, tag) = if n.is_empty() {
                ("<none>".into(), "<none>".into())
            } else {
                display_name(&n)
            };
            let digest = rec
                .repo_digests
                .iter()
                .find_map(|d| {
                    d.split_once('@')
                        .filter(|(r, _)| familiar(r) == repo)
                        .map(|(_, d)| d.to_string())
                })
                .unwrap_or_else(|| "<none>".into());
            rows.push(serde_json::json!({
                "Repository": repo,
                "Tag": tag,
                "Digest": digest,
                "ID": id,
                "CreatedSince": created,
                "CreatedAt": created_at.clone().unwrap_or_default(),
                "Size": crate::timefmt::human_size(size),
            }));
        }
    }
    if args.quiet {
        return 0;
    }
    match format.render(&rows, &IMAGE_ROWS) {
        Ok(Some(text)) => print!("{text}"),
        Ok(None) => {
            let mut cols = vec!["Repository", "Tag"];
            if args.digests {
                cols.push("Digest");
            }
            cols.extend(["ID", "CreatedSince", "Size"]);
            let header: Vec<&str> = cols.iter().map(|c| image_title(c)).collect();
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    cols.iter()
                        .map(|c| r[c].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .collect();
            print_table(&header, &cells);
        }
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    }
    0
}

/// The title of a column of `images`.
fn image_title(field: &'static str) -> &'static str {
    IMAGE_ROWS
        .titles
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, title)| title)
}

fn short_or_full(id: &str, full: bool) -> String {
    if full {
        return id.to_string();
    }
    let hex = id.trim_start_matches("sha256:");
    hex[..12.min(hex.len())].to_string()
}

/// `rmi` flags.
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image (several names, or a stopped container, refer to it).
    #[arg(short = 'f', long)]
    force: bool,
    /// Images (names or IDs).
    #[arg(required = true)]
    images: Vec<String>,
}

/// `rmi [-f] IMAGE...`: prints `Untagged: NAME` and `Deleted: ID` lines as Docker does.
pub fn rmi(root: &StateRoot, args: RmiArgs) -> i32 {
    let store = ImageStore::new(root);
    let uses = image_uses(root);
    let mut rc = 0;
    for wanted in &args.images {
        match remove::remove_image(&store, &uses, wanted, args.force) {
            Ok(done) => print_removals(&done),
            Err(e) => {
                report(&e);
                rc = EXIT_FAILURE;
            }
        }
    }
    rc
}

/// Which image each container of `root` uses (what `rmi` and the prunes must keep).
pub(super) fn image_uses(root: &StateRoot) -> Vec<remove::ImageUse> {
    crate::api::image_uses(&crate::container::ContainerStore::new(root))
}

fn print_removals(done: &[remove::Removal]) {
    for r in done {
        match r {
            remove::Removal::Untagged(n) => println!("Untagged: {}", escape_controls(n)),
            remove::Removal::Deleted(id) => println!("Deleted: {id}"),
        }
    }
}

/// `tag` arguments.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG] or an image ID.
    source: String,
    /// TARGET_IMAGE[:TAG].
    target: String,
}

/// `tag SOURCE TARGET`.
pub fn tag(root: &StateRoot, args: TagArgs) -> i32 {
    match remove::tag(&ImageStore::new(root), &args.source, &args.target) {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `image prune` flags.
#[derive(Args, Debug)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation (capsa only asks on a terminal).
    #[arg(short = 'f', long)]
    force: bool,
}

/// `image prune [-a] [-f]`.
pub fn image_prune(root: &StateRoot, args: ImagePruneArgs) -> i32 {
    use std::io::IsTerminal;
    if !args.force && std::io::stdin().is_terminal() {
        let what = if args.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !answer.trim().eq_ignore_ascii_case("y") {
            return 0;
        }
    }
    let in_use = image_uses(root).into_iter().map(|u| u.image).collect();
    match remove::prune(&ImageStore::new(root), &in_use, args.all) {
        Ok((done, freed)) => {
            if !done.is_empty() {
                println!("Deleted Images:");
                for r in &done {
                    match r {
                        remove::Removal::Untagged(n) => {
                            println!("untagged: {}", escape_controls(n))
                        }
                        remove::Removal::Deleted(id) => println!("deleted: {id}"),
                    }
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

/// `image inspect` flags.
#[derive(Args, Debug)]
pub struct ImageInspectArgs {
    /// Format output using a custom template.
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Images (names or IDs).
    #[arg(required = true)]
    images: Vec<String>,
}

/// `image inspect [-f TEMPLATE] IMAGE...`: a JSON array with Docker's field names.
pub fn image_inspect(root: &StateRoot, args: ImageInspectArgs) -> i32 {
    let store = ImageStore::new(root);
    let mut values = Vec::new();
    let mut rc = 0;
    for name in &args.images {
        match store
            .resolve(name)
            .and_then(|i| inspect::inspect(&store, &i))
        {
            Ok(v) => values.push(v),
            Err(e) => {
                report(&e);
                rc = EXIT_FAILURE;
            }
        }
    }
    if super::containers::print_inspected(&values, args.format.as_deref()) != 0 {
        return EXIT_FAILURE;
    }
    rc
}

/// `history` flags.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Print sizes and dates in human readable format.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
    /// The image.
    image: String,
}

/// `history IMAGE`: IMAGE, CREATED, CREATED BY, SIZE, COMMENT; newest first.
pub fn history(root: &StateRoot, args: HistoryArgs) -> i32 {
    let image = match ImageStore::new(root).resolve(&args.image) {
        Ok(i) => i,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let rows = inspect::history(&image);
    let mut table = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let id = if i == 0 {
            short_or_full(&image.id, args.no_trunc)
        } else {
            "<missing>".into()
        };
        if args.quiet {
            println!("{id}");
            continue;
        }
        let created = match (&row.created, args.human) {
            (Some(c), true) => crate::timefmt::parse_rfc3339(c)
                .map(|t| format!("{} ago", crate::timefmt::ago(t)))
                .unwrap_or_else(|| c.clone()),
            (Some(c), false) => c.clone(),
            (None, _) => "N/A".into(),
        };
        let mut by = row.created_by.replace('\t', " ");
        if !args.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        let size = if args.human {
            crate::timefmt::human_size(row.size)
        } else {
            row.size.to_string()
        };
        table.push(vec![id, created, by, size, row.comment.clone()]);
    }
    if !args.quiet {
        print_table(
            &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
            &table,
        );
    }
    0
}

/// `save` flags.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    output: Option<std::path::PathBuf>,
    /// Images (names or IDs).
    #[arg(required = true)]
    images: Vec<String>,
}

/// `save [-o FILE] IMAGE...`: an OCI layout that is also a docker-archive.
pub fn save(root: &StateRoot, args: SaveArgs) -> i32 {
    use std::io::IsTerminal;
    let store = ImageStore::new(root);
    let result = match &args.output {
        Some(path) => save_to_file(&store, &args.images, path),
        None if std::io::stdout().is_terminal() => {
            super::print_error(
                "cowardly refusing to save to a terminal. Use the -o flag or redirect",
            );
            return EXIT_FAILURE;
        }
        None => archive::save(
            &store,
            &args.images,
            std::io::BufWriter::new(std::io::stdout().lock()),
        ),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// Writes beside `path` and renames: a failed save leaves no partial archive.
fn save_to_file(
    store: &ImageStore,
    images: &[String],
    path: &std::path::Path,
) -> Result<(), crate::image::ImageError> {
    let io = |e| crate::image::ImageError::io(path, e);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    archive::save(store, images, std::io::BufWriter::new(tmp.as_file()))?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// `load` flags.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short = 'i', long)]
    input: Option<String>,
    /// Print nothing.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `load [-i FILE]`: an OCI layout or docker-archive tarball.
pub fn load(root: &StateRoot, args: LoadArgs) -> i32 {
    let store = ImageStore::new(root);
    let result = match args.input.as_deref() {
        None | Some("-") => archive::load(&store, std::io::stdin().lock(), "-"),
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => archive::load(&store, std::io::BufReader::new(f), path),
            Err(e) => Err(crate::image::ImageError::io(std::path::Path::new(path), e)),
        },
    };
    match result {
        Ok(loaded) => {
            if !args.quiet {
                for n in loaded.names {
                    println!("Loaded image: {}", escape_controls(&n));
                }
                for id in loaded.ids {
                    println!("Loaded image ID: {id}");
                }
            }
            0
        }
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

/// `system df` flags.
#[derive(Args, Debug)]
pub struct DfArgs {
    /// Per-image sizes: shared and unique.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Format the summary with a Go template ({{.Type}} {{.TotalCount}} {{.Active}}
    /// {{.Size}} {{.Reclaimable}}), `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// Docker's `system df` summary rows: its formatter context and the title of each field.
const DF_ROWS: Rows = Rows {
    shape: Shape {
        type_name: Some("*formatter.diskUsageImagesContext"),
        string_maps: &[],
        maps: &[],
    },
    titles: &[
        ("Type", "TYPE"),
        ("TotalCount", "TOTAL"),
        ("Active", "ACTIVE"),
        ("Size", "SIZE"),
        ("Reclaimable", "RECLAIMABLE"),
    ],
};

/// `system df [-v]`: images and containers, with the images' logical size (what `images`
/// adds up to) against the disk they really use.
pub fn system_df(root: &StateRoot, args: DfArgs) -> i32 {
    let format = match Format::parse(args.format.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    if args.verbose && !format.is_default() {
        super::print_error(
            "system df: --format with -v is not supported yet (it formats the summary)",
        );
        return EXIT_FAILURE;
    }
    let store = ImageStore::new(root);
    let usage = match inspect::usage(&store) {
        Ok(u) => u,
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    };
    let containers = crate::container::ContainerStore::new(root).list();
    let used: std::collections::BTreeSet<&str> =
        containers.iter().map(|c| c.image_id.as_str()).collect();
    let active = usage
        .images
        .iter()
        .filter(|u| used.contains(u.image.id.as_str()))
        .count();
    let on_disk = usage.layers_on_disk + usage.blobs_on_disk;
    let reclaimable: u64 = usage
        .images
        .iter()
        .filter(|u| !used.contains(u.image.id.as_str()))
        .map(|u| u.size - u.shared)
        .sum();
    let container_dirs: Vec<u64> = containers
        .iter()
        .map(|c| crate::fsutil::disk_usage(&root.containers_dir().join(&c.id)))
        .collect();
    let running = containers
        .iter()
        .filter(|c| matches!(c.status, crate::container::state::Status::Running))
        .count();
    let h = crate::timefmt::human_size;
    let pct = |part: u64, whole: u64| (part * 100).checked_div(whole).unwrap_or(0);
    let rows = vec![
        vec![
            "Images".into(),
            usage.images.len().to_string(),
            active.to_string(),
            h(on_disk),
            format!("{} ({}%)", h(reclaimable), pct(reclaimable, on_disk)),
        ],
        vec![
            "Containers".into(),
            containers.len().to_string(),
            running.to_string(),
            h(container_dirs.iter().sum()),
            h(0),
        ],
        super::volume::df_row(root),
    ];
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let fields = DF_ROWS
                .titles
                .iter()
                .zip(r)
                .map(|((f, _), v)| (f.to_string(), v.clone().into()));
            serde_json::Value::Object(fields.collect())
        })
        .collect();
    match format.render(&values, &DF_ROWS) {
        Ok(Some(text)) => {
            print!("{text}");
            return 0;
        }
        Ok(None) => {}
        Err(e) => {
            report(&e);
            return EXIT_FAILURE;
        }
    }
    print_table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows);
    println!();
    println!(
        "Images, logical: {} (the SIZE column of `capsa images` added up; shared layers count once per image)",
        h(usage.logical)
    );
    println!(
        "Images, on disk: {} = unpacked layers {} + stored blobs {} (each layer and blob once)",
        h(on_disk),
        h(usage.layers_on_disk),
        h(usage.blobs_on_disk)
    );
    if args.verbose {
        println!("\nImages space usage:\n");
        let rows: Vec<Vec<String>> = usage
            .images
            .iter()
            .map(|u| {
                let (repo, tag) = u
                    .image
                    .names
                    .first()
                    .map(|n| display_name(n))
                    .unwrap_or(("<none>".into(), "<none>".into()));
                let n = containers
                    .iter()
                    .filter(|c| c.image_id == u.image.id)
                    .count();
                vec![
                    repo,
                    tag,
                    short_or_full(&u.image.id, false),
                    h(u.size),
                    h(u.shared),
                    h(u.size - u.shared),
                    n.to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "REPOSITORY",
                "TAG",
                "IMAGE ID",
                "SIZE",
                "SHARED SIZE",
                "UNIQUE SIZE",
                "CONTAINERS",
            ],
            &rows,
        );
        super::volume::df_verbose(root);
    }
    0
}
