//! The hostile image: an image whose `/dev` is a relative symlink climbing out of any root
//! to a directory of the host. A runtime that resolves the image's paths on the host side
//! before entering the root makes its device nodes there. The image is imported into the
//! store (for capsa, alone: the probe comes in through its own mount) and kept as a layer
//! directory the peers stack over the benchmark image's layers (bare QEMU's /init is a
//! shell script); after each run the host directory must still be empty.

use std::path::{Path, PathBuf};

use capsa_escape::context::Context;
use capsa_escape::findings::{Finding, Findings};

use crate::bench::error::BenchError;
use crate::bench::scenario::start::tail;
use crate::bench::subjects::{Subject, Workload};
use crate::bench::timing::timed_run;
use crate::container::store::ContainerStore;
use crate::image::remove::ImageUse;
use crate::image::{ImageStore, Reference};
use crate::root::StateRoot;

pub const NAME: &str = "image_dev_symlink";

/// The image and the host directory its /dev points at; dropping it removes both.
pub struct HostileImage {
    pub image: String,
    /// The image's only layer, for the peers.
    pub layer: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    root: StateRoot,
}

/// The symlink's text: enough `..` to leave any root, then the host directory.
fn climbing_link(target: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(48),
        target.display().to_string().trim_start_matches('/')
    )
}

impl HostileImage {
    pub fn prepare(root: &StateRoot, work: &Path) -> Result<HostileImage, BenchError> {
        let dir = work.join("hostile");
        let target = dir.join("host-directory");
        let layer = dir.join("layer");
        for d in [&target, &layer.join("tmp")] {
            std::fs::create_dir_all(d).map_err(BenchError::file(d))?;
        }
        let link = climbing_link(&target);
        let dev = layer.join("dev");
        std::os::unix::fs::symlink(&link, &dev).map_err(BenchError::file(&dev))?;
        let image = format!("capsa-bench-hostile-{}:dev-symlink", std::process::id());
        let reference = Reference::parse(&image).map_err(BenchError::HostileName)?;
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        tar.append_dir_all(".", &layer)
            .map_err(BenchError::HostileLayer)?;
        let bytes = tar.into_inner().map_err(BenchError::HostileLayer)?;
        crate::image::import::import(
            &ImageStore::new(root),
            std::io::Cursor::new(bytes),
            "capsa bench's hostile image (/dev -> a host directory)",
            Some(&reference),
            &[],
        )
        .map_err(BenchError::HostileImport)?;
        Ok(HostileImage {
            image,
            layer,
            target,
            dir,
            root: root.clone(),
        })
    }

    /// Runs the probe in a fresh instance of the hostile image; the finding, and the probe's
    /// view of itself when it ran.
    pub fn check(&self, s: &dyn Subject) -> Result<(Finding, Option<Context>), BenchError> {
        self.empty_target()?;
        let shot = s.one_shot(&Workload::Escape(vec![
            "all".into(),
            "--only".into(),
            "leaked_fds".into(),
        ]))?;
        let run = timed_run(shot.command, "");
        if let Some(cleanup) = shot.cleanup {
            cleanup();
        }
        let run = run?;
        let made: Vec<String> = std::fs::read_dir(&self.target)
            .map_err(BenchError::file(&self.target))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let context = Findings::find_in(&run.stdout).map(|f| f.context);
        let finding = if !made.is_empty() {
            Finding::reached(
                NAME,
                format!(
                    "the runtime made {} entries in the host directory the image's /dev points at: {}",
                    made.len(),
                    made.join(", ")
                ),
            )
        } else if run.exit == 0 {
            Finding::nothing(
                NAME,
                "the host directory the image's /dev points at stayed empty; the instance ran",
            )
        } else {
            Finding::nothing(
                NAME,
                format!(
                    "the host directory the image's /dev points at stayed empty; the run was refused: {}",
                    tail(&run.stderr)
                ),
            )
        };
        self.empty_target()?;
        Ok((finding, context))
    }

    /// Removes what a runtime made in the host directory.
    fn empty_target(&self) -> Result<(), BenchError> {
        let _ = std::fs::remove_dir_all(&self.target);
        std::fs::create_dir_all(&self.target).map_err(BenchError::file(&self.target))
    }
}

impl Drop for HostileImage {
    fn drop(&mut self) {
        let store = ImageStore::new(&self.root);
        let uses: Vec<ImageUse> = ContainerStore::new(&self.root)
            .list()
            .into_iter()
            .map(|s| ImageUse {
                running: matches!(s.status, crate::container::state::Status::Running),
                container: s.id,
                image: s.image_id,
            })
            .collect();
        let _ = crate::image::remove::remove_image(&store, &uses, &self.image, true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
