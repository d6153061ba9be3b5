//! A cgroup of the calling process's own beside another cgroup (`<parent>/<name><suffix>`
//! next to `<parent>/<name>`, in every hierarchy of it), for a process that works for what
//! is in the other one: a container's monitor, whose CPU must count against a limit like
//! the container's. The process enters it with [`Sibling::enter`] and goes back to where it
//! came from with [`Sibling::leave`], which removes it; [`remove`] takes away one whose
//! process is gone or must go.

use super::{manager, read_pids, CgroupError, CgroupPaths, CGROUP_ROOT};
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

/// The calling process inside a sibling cgroup.
#[derive(Debug)]
pub struct Sibling {
    /// The sibling's directories.
    paths: CgroupPaths,
    /// Where the process was before, to go back to.
    home: CgroupPaths,
}

/// The directories of the sibling of `of` named with `suffix`: each directory's name with
/// `suffix` appended.
pub fn paths(of: &CgroupPaths, suffix: &str) -> CgroupPaths {
    let dirs = of
        .dirs
        .iter()
        .map(|(hierarchy, dir)| {
            let mut name = dir.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            (hierarchy.clone(), dir.with_file_name(name))
        })
        .collect();
    CgroupPaths {
        version: of.version,
        dirs,
    }
}

impl Sibling {
    /// Creates the sibling of `of` named with `suffix`, applies `resources` to it, and
    /// moves the calling process (all its threads) into it. None when `of` has no
    /// directories (a container recorded without a cgroup).
    pub fn enter(
        of: &CgroupPaths,
        suffix: &str,
        resources: &LinuxResources,
    ) -> Result<Option<Sibling>, CgroupError> {
        if of.dirs.is_empty() {
            return Ok(None);
        }
        let sibling = Sibling {
            paths: paths(of, suffix),
            home: own_cgroup(of),
        };
        let manager = manager(&sibling.paths);
        if let Err(e) = manager.apply(resources) {
            // Not entered yet: what was made of it goes.
            let _ = manager.destroy();
            return Err(e);
        }
        if let Err(e) = manager.add_task(std::process::id() as i32) {
            sibling.leave();
            return Err(e);
        }
        Ok(Some(sibling))
    }

    /// The sibling's directories.
    pub fn paths(&self) -> &CgroupPaths {
        &self.paths
    }

    /// Applies `resources` to the sibling (limits set after entering, once the process's
    /// set-up work is done).
    pub fn limit(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        manager(&self.paths).apply(resources)
    }

    /// Moves the calling process back where it came from (or, when that cgroup is gone,
    /// to the sibling's parent, or at last to the hierarchy's root: a process about to
    /// exit, out of the way of the removal), then removes the sibling. Leaves it in place
    /// only if the process cannot get out at all; `rm` removes it once the process is gone.
    pub fn leave(self) {
        let me = std::process::id() as i32;
        for place in [
            self.home.clone(),
            parents(&self.paths),
            hierarchy_roots(&self.paths),
        ] {
            if holds(&self.paths, me) {
                let _ = manager(&place).add_task(me);
            }
        }
        if !holds(&self.paths, me) {
            let _ = manager(&self.paths).destroy();
        }
    }
}

/// Removes the sibling of `of` named with `suffix`, killing what is left in it, unless the
/// calling process is in it: then that process removes it itself as it leaves (a monitor
/// removing its own container). Missing directories are fine.
pub fn remove(of: &CgroupPaths, suffix: &str) -> Result<(), CgroupError> {
    let paths = paths(of, suffix);
    // Most often there is none (a foreground run's CLI is its own monitor).
    if !paths.dirs.values().any(|d| d.exists()) || holds(&paths, std::process::id() as i32) {
        return Ok(());
    }
    manager(&paths).destroy()
}

/// Whether `pid` is in the cgroup at `paths`, in any of its hierarchies.
fn holds(paths: &CgroupPaths, pid: i32) -> bool {
    paths.dirs.values().any(|d| read_pids(d).contains(&pid))
}

/// The calling process's own cgroup in each hierarchy of `like`.
fn own_cgroup(like: &CgroupPaths) -> CgroupPaths {
    let own = super::own_cgroups();
    let dirs = like
        .dirs
        .iter()
        .map(|(hierarchy, dir)| {
            let (mount, rel) = if like.version == 2 {
                (super::v2::mount_of(dir), own.get("").cloned())
            } else {
                (
                    Path::new(CGROUP_ROOT).join(hierarchy),
                    hierarchy.split(',').find_map(|c| own.get(c).cloned()),
                )
            };
            let rel = rel.unwrap_or_else(|| "/".into());
            let dir = mount.join(rel.trim_start_matches('/'));
            (hierarchy.clone(), dir)
        })
        .collect();
    CgroupPaths {
        version: like.version,
        dirs,
    }
}

/// The parent directory of each of `paths`.
fn parents(paths: &CgroupPaths) -> CgroupPaths {
    let dirs = paths
        .dirs
        .iter()
        .map(|(h, d)| {
            (
                h.clone(),
                d.parent().map_or_else(|| d.clone(), PathBuf::from),
            )
        })
        .collect();
    CgroupPaths {
        version: paths.version,
        dirs,
    }
}

/// The root of each hierarchy of `paths`: it takes any process, on cgroup v2 too.
fn hierarchy_roots(paths: &CgroupPaths) -> CgroupPaths {
    let dirs = paths
        .dirs
        .iter()
        .map(|(h, d)| {
            let root = if paths.version == 2 {
                super::v2::mount_of(d)
            } else {
                Path::new(CGROUP_ROOT).join(h)
            };
            (h.clone(), root)
        })
        .collect();
    CgroupPaths {
        version: paths.version,
        dirs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_sibling_is_named_beside_each_directory() {
        let mut dirs = BTreeMap::new();
        dirs.insert(
            "cpu,cpuacct".into(),
            "/sys/fs/cgroup/cpu,cpuacct/p/abc".into(),
        );
        dirs.insert("memory".into(), "/sys/fs/cgroup/memory/p/abc".into());
        let of = CgroupPaths { version: 1, dirs };
        let s = paths(&of, "-monitor");
        assert_eq!(
            s.dirs["cpu,cpuacct"],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/p/abc-monitor")
        );
        assert_eq!(
            s.dirs["memory"],
            Path::new("/sys/fs/cgroup/memory/p/abc-monitor")
        );
        assert!(super::super::check_recorded(&s).is_ok());
        assert_eq!(
            parents(&s).dirs["memory"],
            Path::new("/sys/fs/cgroup/memory/p")
        );
        assert_eq!(
            hierarchy_roots(&s).dirs["memory"],
            Path::new("/sys/fs/cgroup/memory")
        );
    }
}
