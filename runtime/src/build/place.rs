//! Where a COPY/ADD's files land: unpacked inside a build container's root (a child
//! process chrooted there, so the image's own symbolic links resolve inside the image and
//! the parent directories keep their owners and modes through the overlay's copy-up),
//! then owned and moded as `--chown`/`--chmod` say; or, for an image with no layer yet
//! (`FROM scratch`), written straight as the layer tar.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How the stream's entries are placed.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The destination, absolute (the WORKDIR applied).
    pub dest: String,
    /// One file to be written as `dest` itself (unless `dest` is a directory there).
    pub single_file: bool,
    /// `--chown`: `user[:group]`, names resolved in the image's /etc/passwd and /etc/group.
    pub chown: Option<String>,
    /// `--chmod`, octal.
    pub chmod: Option<u32>,
}

/// In the container's root (a child's): unpacks `input` as `placement` says.
pub fn place(input: impl Read, placement: &Placement) -> Result<(), String> {
    let owner = match &placement.chown {
        Some(spec) => Some(resolve_owner(spec)?),
        None => None,
    };
    let dest = PathBuf::from(&placement.dest);
    let as_file = placement.single_file && !dest.is_dir();
    let dir = match as_file {
        true => dest.parent().unwrap_or(Path::new("/")).to_path_buf(),
        false => dest.clone(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let bad = |e: std::io::Error| format!("the copied files: {e}");
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.into_owned();
        let target = match as_file {
            true => {
                entry
                    .unpack(&dest)
                    .map_err(|e| format!("{}: {}", dest.display(), chain(&e)))?;
                dest.clone()
            }
            false => {
                if !entry
                    .unpack_in(&dir)
                    .map_err(|e| format!("{}: {}", name.display(), chain(&e)))?
                {
                    return Err(format!(
                        "{}: outside the destination (refused)",
                        name.display()
                    ));
                }
                dir.join(&name)
            }
        };
        let link = entry.header().entry_type() == tar::EntryType::Symlink;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", target.display()))?;
        }
        if let (Some(mode), false) = (placement.chmod, link) {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", target.display()))?;
        }
    }
    Ok(())
}

/// An error with its causes (tar's own message names only the entry).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// `user[:group]` as IDs: numbers as they are, names from the image's files; a user
/// without a group gives its own ID (a name: its primary group) as the group.
fn resolve_owner(spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_account_file("/etc/passwd")?;
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => lookup(&passwd, user)
            .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
            .ok_or_else(|| format!("--chown {spec}: no user {user:?} in the image"))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read_account_file("/etc/group")?;
                lookup(&groups, g)
                    .and_then(|f| f.get(2)?.parse().ok())
                    .ok_or_else(|| format!("--chown {spec}: no group {g:?} in the image"))?
            }
        },
    };
    Ok((uid, gid))
}

/// The most of /etc/passwd or /etc/group read (the image's: hostile input).
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// The image's /etc/passwd or /etc/group, read by a process that is host root outside any
/// container cgroup: only a regular file (a device node or a FIFO the image made there
/// would have it read the host's device or wait forever), opened without blocking, and to a
/// bound. A missing file reads as empty (names then resolve to nothing).
fn read_account_file(path: &str) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(format!("{path} in the image: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("{path} in the image: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} in the image: not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_ACCOUNT_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{path} in the image: {e}"))?;
    if text.len() as u64 > MAX_ACCOUNT_FILE {
        return Err(format!(
            "{path} in the image: larger than {MAX_ACCOUNT_FILE} bytes"
        ));
    }
    Ok(text)
}

fn lookup<'a>(file: &'a str, name: &str) -> Option<Vec<&'a str>> {
    file.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
}

/// For an image without layers: the stream rewritten as a layer tar, its entries under
/// `dest` with their parent directories (0755, root's), owned numerically as `--chown`
/// says (an empty image has no user names).
pub fn scratch_layer(
    input: impl Read,
    placement: &Placement,
    out: impl Write,
) -> Result<(), String> {
    let owner = match &placement.chown {
        Some(spec) => {
            let (u, g) = spec.split_once(':').unwrap_or((spec, spec));
            match (u.parse::<u64>(), g.parse::<u64>()) {
                (Ok(u), Ok(g)) => Some((u, g)),
                _ => {
                    return Err(format!(
                        "--chown {spec}: names need an image with /etc/passwd"
                    ))
                }
            }
        }
        None => None,
    };
    let dest = super::ignore::clean(&placement.dest);
    let mut tar = tar::Builder::new(out);
    let bad = |e: std::io::Error| format!("the copied files: {e}");
    let mut parents = Vec::new();
    let mut at = String::new();
    let dir_parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty()).collect();
    let n = match placement.single_file {
        true => dir_parts.len().saturating_sub(1),
        false => dir_parts.len(),
    };
    for part in &dir_parts[..n] {
        at = if at.is_empty() {
            part.to_string()
        } else {
            format!("{at}/{part}")
        };
        parents.push(at.clone());
    }
    for p in parents {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, format!("{p}/"), std::io::empty())
            .map_err(bad)?;
    }
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.into_owned();
        let full = match placement.single_file {
            true => PathBuf::from(&dest),
            false => Path::new(&dest).join(&name),
        };
        let mut header = entry.header().clone();
        if let Some((u, g)) = owner {
            header.set_uid(u);
            header.set_gid(g);
        }
        if let (Some(mode), false) = (
            placement.chmod,
            header.entry_type() == tar::EntryType::Symlink,
        ) {
            header.set_mode(mode);
        }
        match header.entry_type() {
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(bad)?.unwrap_or_default();
                tar.append_link(&mut header, &full, target.as_ref())
                    .map_err(bad)?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name().map_err(bad)?.unwrap_or_default();
                let target = Path::new(&dest).join(target);
                tar.append_link(&mut header, &full, &target).map_err(bad)?;
            }
            _ => tar
                .append_data(&mut header, &full, &mut entry)
                .map_err(bad)?,
        }
    }
    tar.finish().map_err(bad)
}
