//! The host-wide registry of `--userns=auto` ID ranges: one record per range taken, so that
//! no two containers on this host share host IDs, whichever state root holds them.
//!
//! A range is host state, not a store's: a container's processes and its writable layer's
//! files carry those host IDs, and any other container with the same range could signal
//! its processes and open its files. So the records live outside every state root, in
//! [`REGISTRY_DIR`] (root's alone), one file per range named by its first ID, holding the
//! state root and container ID that hold it. A range stays taken while that container
//! exists, stopped too (its writable layer keeps files of those IDs), and across reboots
//! (stopped containers survive one, so the registry is on disk, not in /run).
//!
//! Records are made under a lock, each written whole to a temporary file and linked into
//! place with O_EXCL semantics (`link(2)` fails on an existing name), so a power loss never
//! leaves a half-written one. `rm` releases its record; a record whose container folder no
//! longer exists (its state root deleted, an `rm` interrupted) is stale and reclaimed by
//! the next allocation. Engine uids of VMs come from a disjoint range (`vm::jail`).
//!
//! Host users' subordinate ranges (/etc/subuid and /etc/subgid, which `useradd` fills from
//! 100000 on Debian, for their rootless containers) are never handed out: a range that
//! overlaps any of them is skipped, so no host user's own namespaces share IDs with a
//! container's.

use crate::fsutil::{check_only_root_controls, FileLock};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where the records live: persistent, root's alone.
pub const REGISTRY_DIR: &str = "/var/lib/capsa-userns";
/// First host ID handed to user-namespaced containers, above the IDs of host users.
pub const USERNS_FIRST_ID: u32 = 100_000;
/// How many ranges the pool holds (from host ID 100000 up, past subordinate ranges).
pub const USERNS_RANGES: u32 = 512;
/// IDs per range: a whole 16-bit ID space, as Docker's and Podman's defaults.
pub const USERNS_RANGE: u32 = super::spec::USERNS_RANGE;
/// The files listing host users' subordinate ID ranges (`name:first:count` lines).
pub const SUBORDINATE_ID_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];
/// The pool ends before this ID, wherever the subordinate ranges push it: below VM engine
/// uids (`vm::jail::FIRST_UID`) and below 2^31 (higher IDs are refused for workloads).
pub const USERNS_ID_LIMIT: u32 = 2_000_000_000;

/// Errors of the registry, naming the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// A record or the lock could not be read or written.
    #[error("user-namespace registry {}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another user than root could change the registry.
    #[error("user-namespace registry: {0}")]
    Insecure(#[from] crate::fsutil::InsecurePath),
    /// Every range is held.
    #[error("--userns=auto: all {USERNS_RANGES} ID ranges of this host are in use")]
    Exhausted,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UsernsError + '_ {
    move |source| UsernsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who holds a range: one record's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The state root (resolved path) of the container.
    pub root: PathBuf,
    /// The container's full ID.
    pub id: String,
}

impl Holder {
    /// Whether the container still exists: its folder is there (running or stopped).
    fn exists(&self) -> bool {
        self.root.join("containers").join(&self.id).is_dir()
    }
}

/// The registry in `dir` ([`REGISTRY_DIR`] on a host).
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    /// Files of subordinate ID ranges to keep clear of ([`SUBORDINATE_ID_FILES`]).
    subordinate_files: Vec<PathBuf>,
}

impl Registry {
    /// The host's registry, clear of the host's subordinate ID ranges.
    pub fn host() -> Registry {
        Registry::at(Path::new(REGISTRY_DIR)).keeping_clear_of(
            &SUBORDINATE_ID_FILES
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>(),
        )
    }

    /// A registry in `dir` that knows no subordinate ranges (tests use a folder of their
    /// own).
    pub fn at(dir: &Path) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
            subordinate_files: Vec::new(),
        }
    }

    /// This registry, never handing out IDs listed in the subuid/subgid-format `files`.
    pub fn keeping_clear_of(mut self, files: &[PathBuf]) -> Registry {
        self.subordinate_files = files.to_vec();
        self
    }

    fn record(&self, base: u32) -> PathBuf {
        self.dir.join(base.to_string())
    }

    /// Takes the registry's lock, making the folder (root's alone) if needed.
    fn lock(&self) -> Result<FileLock, UsernsError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        check_only_root_controls(&self.dir)?;
        let path = self.dir.join(".lock");
        FileLock::acquire(&path).map_err(io_err(&path))
    }

    /// Reserves the lowest free range for `holder` and returns its first host ID. Ranges
    /// in `also_taken` (held by containers that predate the registry) are skipped and
    /// recorded for their holders. Stale records are removed on the way.
    pub fn reserve(
        &self,
        holder: &Holder,
        also_taken: &[(u32, Holder)],
    ) -> Result<u32, UsernsError> {
        let _lock = self.lock()?;
        let mut taken = self.live_records()?;
        for (base, owner) in also_taken {
            if !taken.iter().any(|(b, _)| b == base) {
                self.write_record(*base, owner)?;
                taken.push((*base, owner.clone()));
            }
        }
        let base = self
            .pool()?
            .into_iter()
            .find(|b| !taken.iter().any(|(t, _)| t == b))
            .ok_or(UsernsError::Exhausted)?;
        self.write_record(base, holder)?;
        Ok(base)
    }

    /// The first IDs of the ranges containers may have, lowest first: [`USERNS_RANGES`]
    /// ranges from [`USERNS_FIRST_ID`] on, each clear of every subordinate range.
    fn pool(&self) -> Result<Vec<u32>, UsernsError> {
        let mut reserved = Vec::new();
        for file in &self.subordinate_files {
            match std::fs::read_to_string(file) {
                Ok(text) => reserved.extend(subordinate_ranges(&text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(file)(e)),
            }
        }
        let overlaps = |first: u64| {
            let end = first + u64::from(USERNS_RANGE);
            reserved.iter().any(|&(s, e)| first < e && s < end)
        };
        Ok((0u64..)
            .map(|k| u64::from(USERNS_FIRST_ID) + k * u64::from(USERNS_RANGE))
            .take_while(|first| first + u64::from(USERNS_RANGE) <= u64::from(USERNS_ID_LIMIT))
            .filter(|first| !overlaps(*first))
            .take(USERNS_RANGES as usize)
            .map(|first| first as u32)
            .collect())
    }

    /// Releases what `holder` holds (the range at `base` when known, else any).
    pub fn release(&self, holder: &Holder, base: Option<u32>) -> Result<(), UsernsError> {
        if base.is_none() && !self.dir.is_dir() {
            return Ok(());
        }
        let _lock = self.lock()?;
        let candidates: Vec<u32> = match base {
            Some(b) => vec![b],
            None => self.bases()?,
        };
        for b in candidates {
            if self.read_record(b).as_ref() == Some(holder) {
                let path = self.record(b);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        Ok(())
    }

    /// Every record whose container exists; stale ones are removed. A record that cannot
    /// be read is kept and its range counted as taken: only a person can tell whose it is.
    fn live_records(&self) -> Result<Vec<(u32, Holder)>, UsernsError> {
        let mut live = Vec::new();
        for base in self.bases()? {
            match self.read_record(base) {
                Some(holder) if !holder.exists() => {
                    tracing::debug!(base, id = %holder.id, root = %holder.root.display(), "stale user-namespace record reclaimed");
                    let path = self.record(base);
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                }
                Some(holder) => live.push((base, holder)),
                None => live.push((
                    base,
                    Holder {
                        root: PathBuf::new(),
                        id: String::new(),
                    },
                )),
            }
        }
        Ok(live)
    }

    /// The first IDs of every recorded range.
    fn bases(&self) -> Result<Vec<u32>, UsernsError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect())
    }

    fn read_record(&self, base: u32) -> Option<Holder> {
        serde_json::from_slice(&std::fs::read(self.record(base)).ok()?).ok()
    }

    /// Writes the record of `base` whole and durably, then links it into place; fails if
    /// one exists already.
    fn write_record(&self, base: u32, holder: &Holder) -> Result<(), UsernsError> {
        let path = self.record(base);
        let tmp = self.dir.join(format!(".{base}.tmp.{}", std::process::id()));
        let data = serde_json::to_vec(holder).map_err(|e| io_err(&path)(io::Error::other(e)))?;
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(crate::root::PRIVATE_FILE)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        let _ = std::fs::remove_file(&tmp);
        written.map_err(io_err(&path))
    }
}

/// The ranges `[first, first + count)` of subuid/subgid-format text (`owner:first:count`
/// lines); other lines (blank, comments, malformed) name no range and are skipped, as
/// shadow's own tools skip them.
fn subordinate_ranges(text: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    text.lines().filter_map(|line| {
        let mut f = line.trim().split(':');
        let (_owner, first, count) = (f.next()?, f.next()?, f.next()?);
        let first: u64 = first.parse::<u32>().ok()?.into();
        let count: u64 = count.parse::<u32>().ok()?.into();
        (f.next().is_none() && count > 0).then_some((first, first + count))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(root: &Path, id: &str) -> Holder {
        Holder {
            root: root.to_path_buf(),
            id: id.to_string(),
        }
    }

    /// A state root with the folders of containers `ids`.
    fn root_with(ids: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for id in ids {
            std::fs::create_dir_all(root.path().join("containers").join(id)).unwrap();
        }
        root
    }

    #[test]
    fn ranges_are_distinct_across_roots_and_released_by_their_holder() {
        let reg_dir = tempfile::tempdir().unwrap();
        let reg = Registry::at(&reg_dir.path().join("reg"));
        let (a, b) = (root_with(&["a1"]), root_with(&["b1"]));
        let first = reg.reserve(&holder(a.path(), "a1"), &[]).unwrap();
        let second = reg.reserve(&holder(b.path(), "b1"), &[]).unwrap();
        assert_eq!(first, USERNS_FIRST_ID);
        assert_eq!(second, USERNS_FIRST_ID + USERNS_RANGE);
        // Only the holder's own release frees a range.
        reg.release(&holder(b.path(), "a1"), Some(first)).unwrap();
        assert!(reg.record(first).exists());
        reg.release(&holder(a.path(), "a1"), None).unwrap();
        assert!(!reg.record(first).exists());
        assert_eq!(reg.reserve(&holder(a.path(), "a1"), &[]).unwrap(), first);
    }

    #[test]
    fn a_record_whose_container_is_gone_is_reclaimed_and_old_holders_are_adopted() {
        let reg_dir = tempfile::tempdir().unwrap();
        let reg = Registry::at(reg_dir.path());
        let gone = root_with(&["g1"]);
        let stale = reg.reserve(&holder(gone.path(), "g1"), &[]).unwrap();
        std::fs::remove_dir_all(gone.path().join("containers/g1")).unwrap();
        let live = root_with(&["l1", "old"]);
        let old = (
            USERNS_FIRST_ID + 3 * USERNS_RANGE,
            holder(live.path(), "old"),
        );
        let got = reg
            .reserve(&holder(live.path(), "l1"), std::slice::from_ref(&old))
            .unwrap();
        assert_eq!(got, stale, "the stale range is the lowest free one again");
        assert_eq!(reg.read_record(old.0), Some(old.1.clone()));
        // A record nobody can read keeps its range.
        std::fs::write(reg.record(USERNS_FIRST_ID + USERNS_RANGE), b"").unwrap();
        let next = reg.reserve(&holder(live.path(), "l2"), &[]).unwrap();
        assert_eq!(next, USERNS_FIRST_ID + 2 * USERNS_RANGE);
    }

    #[test]
    fn host_users_subordinate_ranges_are_never_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let subuid = dir.path().join("subuid");
        let subgid = dir.path().join("subgid");
        // Debian's first two users, one range in the middle of the pool that starts and
        // ends inside two of capsa's ranges, and lines that name nothing.
        std::fs::write(
            &subuid,
            "alice:100000:65536\nbob:165536:65536\n\n# comment\nbroken:1:2:3\nnum:x:1\n",
        )
        .unwrap();
        let mid = USERNS_FIRST_ID + 10 * USERNS_RANGE + 7;
        std::fs::write(&subgid, format!("1000:{mid}:{}\n", USERNS_RANGE)).unwrap();
        let reg = Registry::at(&dir.path().join("reg")).keeping_clear_of(&[subuid, subgid]);
        let pool = reg.pool().unwrap();
        assert_eq!(
            pool.len(),
            USERNS_RANGES as usize,
            "the pool keeps its size"
        );
        let reserved = [
            (100_000u64, 165_536u64),
            (165_536, 231_072),
            (u64::from(mid), u64::from(mid + USERNS_RANGE)),
        ];
        for pair in pool.windows(2) {
            assert!(
                pair[0] + USERNS_RANGE <= pair[1],
                "ranges are distinct: {pair:?}"
            );
        }
        for &first in &pool {
            let (s, e) = (u64::from(first), u64::from(first) + u64::from(USERNS_RANGE));
            assert!(e <= u64::from(USERNS_ID_LIMIT));
            for (rs, re) in reserved {
                assert!(e <= rs || re <= s, "{first} overlaps [{rs}, {re})");
            }
        }
        // Ranges 0, 1 (alice, bob), 10 and 11 (the one in the middle) are skipped.
        assert_eq!(pool[0], USERNS_FIRST_ID + 2 * USERNS_RANGE);
        assert_eq!(pool[8], USERNS_FIRST_ID + 12 * USERNS_RANGE);
        // Reservations take the pool's ranges in order.
        let root = root_with(&["x1", "x2"]);
        assert_eq!(
            reg.reserve(&holder(root.path(), "x1"), &[]).unwrap(),
            pool[0]
        );
        assert_eq!(
            reg.reserve(&holder(root.path(), "x2"), &[]).unwrap(),
            pool[1]
        );
    }

    #[test]
    fn missing_subordinate_files_reserve_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::at(&dir.path().join("reg"))
            .keeping_clear_of(&[dir.path().join("no-subuid"), dir.path().join("no-subgid")]);
        let pool = reg.pool().unwrap();
        assert_eq!(pool.len(), USERNS_RANGES as usize);
        assert_eq!(pool[0], USERNS_FIRST_ID);
        assert_eq!(pool[511], USERNS_FIRST_ID + 511 * USERNS_RANGE);
    }
}
