//! A container's record under `--root` (`<root>/<id>/state.json`, beside `config.json`,
//! the spec the core runs, and `exec.fifo`, the start gate), its status as runc names it,
//! and runc's `state` document.

use super::RuntimeError;
use crate::container::state::process_start_time;
use crate::linux::cgroups::CgroupPaths;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What `create` records; the status is observed, never stored (but `paused`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The init's host PID (0 until it exists).
    pub pid: i32,
    /// Its start time in /proc/<pid>/stat, against PID reuse.
    pub pid_start_time: Option<u64>,
    /// RFC 3339.
    pub created: String,
    pub annotations: HashMap<String, String>,
    pub cgroup: CgroupPaths,
    /// Set by `pause`, cleared by `resume`.
    #[serde(default)]
    pub paused: bool,
    /// A VM-isolated container's pod (see [`super::vm`]); None in host namespaces.
    #[serde(default)]
    pub vm: Option<super::vm::VmMember>,
}

/// runc's four statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The init waits at the start gate.
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// runc's `state` document.
#[derive(Debug, Serialize)]
pub struct StateDocument {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'static str,
    pub id: String,
    pub pid: i32,
    pub status: &'static str,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    pub annotations: HashMap<String, String>,
}

/// The files of one container.
pub struct Dir {
    pub dir: PathBuf,
}

impl Dir {
    /// Container `id` under `root`, the ID checked first (it names a directory).
    pub fn of(root: &Path, id: &str) -> Result<Dir, RuntimeError> {
        check_id(id)?;
        Ok(Dir { dir: root.join(id) })
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn exec_fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }
}

/// runc's rule for IDs (letters, digits, `_+-.`), minus a leading `.` (kept for
/// capsa-runc's own files under the root) and any `/`.
pub fn check_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadId(id.to_string()))
    }
}

/// Reads container `id`'s record.
pub fn load(root: &Path, id: &str) -> Result<(Dir, Record), RuntimeError> {
    let dir = Dir::of(root, id)?;
    let text = match std::fs::read(dir.record()) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RuntimeError::NotFound(id.to_string()))
        }
        Err(e) => return Err(RuntimeError::io(dir.record().display().to_string())(e)),
    };
    let record = serde_json::from_slice(&text).map_err(|e| {
        RuntimeError::io(dir.record().display().to_string())(std::io::Error::other(e))
    })?;
    Ok((dir, record))
}

/// Writes `record` (atomically).
pub fn save(dir: &Dir, record: &Record) -> Result<(), RuntimeError> {
    crate::fsutil::write_json_atomic(&dir.record(), record)
        .map_err(RuntimeError::io(dir.record().display().to_string()))
}

impl Record {
    /// The record `create` starts from: container `id` of `bundle_dir`'s `spec`, its
    /// cgroup and (in a VM) its pod; no init yet.
    pub fn created(
        id: &str,
        spec: &oci_spec::runtime::Spec,
        bundle_dir: &Path,
        cgroup: CgroupPaths,
        vm: Option<super::vm::VmMember>,
    ) -> Record {
        Record {
            id: id.to_string(),
            bundle: bundle_dir.to_path_buf(),
            rootfs: super::bundle::rootfs(spec, bundle_dir),
            pid: 0,
            pid_start_time: None,
            created: crate::timefmt::rfc3339(std::time::SystemTime::now()),
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup,
            paused: false,
            vm,
        }
    }

    /// Whether the init is alive (not a zombie) and still the process recorded.
    pub fn init_alive(&self) -> bool {
        self.pid > 0
            && self.pid_start_time.is_some()
            && process_start_time(self.pid) == self.pid_start_time
    }

    /// The status as observed now.
    pub fn status(&self, dir: &Dir) -> Status {
        if !self.init_alive() {
            Status::Stopped
        } else if dir.exec_fifo().exists() {
            Status::Created
        } else if self.paused {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// runc's `state` document.
    pub fn document(&self, dir: &Dir) -> StateDocument {
        let status = self.status(dir);
        self.document_as(status.word(), status != Status::Stopped)
    }

    /// The state document with `status` as a hook is told it (`creating` for the hooks of
    /// `create`); `with_pid` false shows PID 0, as for a stopped container.
    pub fn document_as(&self, status: &'static str, with_pid: bool) -> StateDocument {
        StateDocument {
            oci_version: "1.0.2",
            id: self.id.clone(),
            pid: if with_pid { self.pid } else { 0 },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Every container ID under `root` (capsa-runc's own entries start with `.`).
pub fn ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| check_id(n).is_ok())
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::check_id;

    #[test]
    fn ids_that_name_other_paths_are_refused() {
        for bad in ["", "..", ".", ".seccomp", "a/b", "a b", "x\n"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["abc", "a.b-c_d+e", "0123456789abcdef"] {
            assert!(check_id(good).is_ok(), "{good:?}");
        }
    }
}
