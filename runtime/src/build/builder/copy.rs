//! COPY and ADD: the sources from the context (or an earlier stage or an image), one tar
//! stream with their checksum for the cache key, placed in a build container's root (or
//! written as the first layer of an empty image).

use super::{step_error, Builder, StageState};
use crate::build::cache::Cache;
use crate::build::containers;
use crate::build::place::{scratch_layer, Placement};
use crate::build::words::word;
use crate::build::BuildError;
use parse_dockerfile as pd;
use std::io::Seek;

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy(
        &mut self,
        st: &mut StageState,
        text: &str,
        add: bool,
        options: &[pd::Flag],
        src: &[pd::Source],
        dest: &pd::UnescapedString,
    ) -> Result<(), BuildError> {
        let vars = st.vars();
        let (mut from, mut chown, mut chmod) = (None, None, None);
        for flag in options {
            let value = flag
                .value
                .as_ref()
                .map(|v| word(&v.value, &vars))
                .transpose()?;
            match (flag.name.value.as_ref(), value) {
                ("from", Some(v)) if !add => from = Some(v),
                ("chown", Some(v)) => chown = Some(v),
                ("chmod", Some(v)) => {
                    let mode = u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            step_error(text, format!("--chmod={v}: not an octal mode"))
                        })?;
                    chmod = Some(mode);
                }
                ("link", _) => {}
                (name, _) => {
                    return Err(step_error(
                        text,
                        format!("--{name}: not supported by capsa build"),
                    ))
                }
            }
        }
        let mut sources = Vec::new();
        for s in src {
            match s {
                pd::Source::Path(p) => sources.push(word(&p.value, &vars)?),
                _ => {
                    return Err(step_error(
                        text,
                        "heredoc sources are not supported by capsa build".into(),
                    ))
                }
            }
        }
        if add {
            if let Some(url) = sources.iter().find(|s| is_url(s)) {
                return Err(step_error(
                    text,
                    format!("ADD of a URL ({url}) is refused: capsa build never fetches from the network; download it into the context and COPY it"),
                ));
            }
        }
        let dest_word = word(&dest.value, &vars)?;
        let mut dest_path = match dest_word.starts_with('/') {
            true => dest_word.clone(),
            false => format!("{}/{dest_word}", st.workdir()),
        };
        dest_path = format!("/{}", crate::build::ignore::clean(&dest_path));
        let to_dir = dest_word.ends_with('/') || dest_word == "." || dest_word.is_empty();
        let tmp = self.store.tmp_dir();
        let mut stream = tempfile::tempfile_in(&tmp)
            .map_err(|e| BuildError::Context(format!("{}: {e}", tmp.display())))?;
        let (sum, single) = match &from {
            None => {
                let items = self.ctx.select(&sources)?;
                let glob = sources.iter().any(|s| crate::build::ignore::is_glob(s));
                if items.len() > 1 && !to_dir {
                    return Err(step_error(
                        text,
                        "When using COPY with more than one source file, the destination must be a directory and end with a /".into(),
                    ));
                }
                let archive =
                    add && items.len() == 1 && !items[0].dir && self.ctx.is_archive(&items[0].path);
                let single = items.len() == 1 && !items[0].dir && !glob && !to_dir && !archive;
                let sum = match archive {
                    true => self.ctx.write_archive(&items[0].path, &mut stream)?,
                    false => self.ctx.write_tar(&items, &mut stream)?,
                };
                (sum, single)
            }
            Some(name) => self.copy_source_image(text, name, &sources, to_dir, &mut stream)?,
        };
        let placement = Placement {
            dest: dest_path,
            single_file: single,
            chown: chown.clone(),
            chmod,
        };
        let kind = if add { "ADD" } else { "COPY" };
        let created_by = format!(
            "/bin/sh -c #(nop) {kind} {}:{sum} in {} ",
            if single { "file" } else { "dir" },
            placement.dest
        );
        let flags = format!("{chown:?} {chmod:?} {single}");
        self.step(st, &["copy", &created_by, &flags], |b, st| {
            stream
                .rewind()
                .map_err(|e| BuildError::Context(e.to_string()))?;
            if st.image.layer_dirs.is_empty() {
                let mut layer =
                    tempfile::tempfile_in(&tmp).map_err(|e| BuildError::Context(e.to_string()))?;
                scratch_layer(&mut stream, &placement, &mut layer)
                    .map_err(|reason| step_error(text, reason))?;
                layer
                    .rewind()
                    .map_err(|e| BuildError::Context(e.to_string()))?;
                return Ok(crate::image::commit::commit_step(
                    &b.store,
                    &st.image,
                    Some(layer),
                    &st.config,
                    &created_by,
                )?);
            }
            containers::copy_step(
                &b.containers,
                st.image.clone(),
                stream,
                &placement,
                &st.config,
                &created_by,
                b.opts.cgroup_parent.clone(),
            )
            .map_err(|e| match e {
                // The placing child's own words (the build container is gone already).
                BuildError::Container(crate::container::ContainerError::Copy {
                    source, ..
                }) => step_error(text, source.to_string()),
                BuildError::Container(e) => step_error(text, e.to_string()),
                e => e,
            })
        })
    }

    /// COPY --from: `sources` (literal paths) out of an earlier stage or an image, as one
    /// stream of entries under their copied names. Its checksum is the image's ID with
    /// the paths (an image's content is its ID's).
    fn copy_source_image(
        &mut self,
        text: &str,
        name: &str,
        sources: &[String],
        to_dir: bool,
        stream: &mut std::fs::File,
    ) -> Result<(String, bool), BuildError> {
        let image = match self.stage_image(name) {
            Some(i) => i,
            None => self.store.resolve(name).map_err(|_| {
                step_error(
                    text,
                    format!("--from={name}: no stage or image of that name"),
                )
            })?,
        };
        if sources.iter().any(|s| crate::build::ignore::is_glob(s)) {
            return Err(step_error(
                text,
                "COPY --from with a wildcard is not supported by capsa build".into(),
            ));
        }
        let mut out = tar::Builder::new(&mut *stream);
        let mut single = sources.len() == 1 && !to_dir;
        for source in sources {
            let path = format!("/{}", crate::build::ignore::clean(source));
            let mut copied = tempfile::tempfile_in(self.store.tmp_dir())
                .map_err(|e| BuildError::Context(e.to_string()))?;
            containers::copy_out(
                &self.containers,
                image.clone(),
                &path,
                &mut copied,
                self.opts.cgroup_parent.clone(),
            )
            .map_err(|e| step_error(text, format!("--from={name} {source}: {e}")))?;
            copied
                .rewind()
                .map_err(|e| BuildError::Context(e.to_string()))?;
            let dir = rewrite_copied(&mut copied, &mut out)
                .map_err(|e| step_error(text, e.to_string()))?;
            single &= !dir;
        }
        out.finish()
            .map_err(|e| BuildError::Context(e.to_string()))?;
        drop(out);
        let sum = Cache::key(&[&image.id, &sources.join("\0")]);
        Ok((sum, single))
    }
}

/// Copies the entries of a `cp` stream (its top entry named after the source) into `out`:
/// a directory's contents under their names within it, a file under its own; whether the
/// source was a directory.
fn rewrite_copied<W: std::io::Write>(
    input: impl std::io::Read,
    out: &mut tar::Builder<W>,
) -> std::io::Result<bool> {
    let mut archive = tar::Archive::new(input);
    let mut top: Option<(std::path::PathBuf, bool)> = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut header = entry.header().clone();
        let is_dir = header.entry_type() == tar::EntryType::Directory;
        let (top_name, top_dir) = top.get_or_insert_with(|| (path.clone(), is_dir)).clone();
        let name = match top_dir {
            true => match path.strip_prefix(&top_name) {
                Ok(rest) if rest.as_os_str().is_empty() => continue,
                Ok(rest) => rest.to_path_buf(),
                Err(_) => continue,
            },
            false => path.clone(),
        };
        match header.entry_type() {
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.unwrap_or_default().into_owned();
                out.append_link(&mut header, &name, &target)?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name()?.unwrap_or_default().into_owned();
                let target = match top_dir {
                    true => target
                        .strip_prefix(&top_name)
                        .map(|p| p.to_path_buf())
                        .unwrap_or(target),
                    false => target,
                };
                out.append_link(&mut header, &name, &target)?;
            }
            _ => out.append_data(&mut header, &name, &mut entry)?,
        }
    }
    Ok(top.is_some_and(|(_, d)| d))
}

fn is_url(s: &str) -> bool {
    ["http://", "https://", "git@", "git://"]
        .iter()
        .any(|p| s.starts_with(p))
}
