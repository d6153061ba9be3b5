//! Resolving `-u USER[:GROUP]` against the container's own /etc/passwd and /etc/group,
//! as Docker does at start time.

use crate::linux::inroot::Root;
use std::path::Path;

/// Who the workload runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups from /etc/group.
    pub additional_gids: Vec<u32>,
    /// Home directory (for `HOME` when the image does not set it).
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// The text of `path` inside `root` (resolved in it, never through a magic link, and only
/// a regular file: a FIFO there must not block the init); empty when it cannot be read.
fn read_in_root(root: &Path, path: &str) -> String {
    let read = || -> std::io::Result<String> {
        let file = Root::open(root)?.open_regular(Path::new(path))?;
        std::io::read_to_string(file)
    };
    read().unwrap_or_default()
}

fn read_passwd(root: &Path) -> Vec<PasswdEntry> {
    let text = read_in_root(root, "/etc/passwd");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].into(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].into(),
            })
        })
        .collect()
}

/// (name, gid, members) of each /etc/group line.
fn read_groups(root: &Path) -> Vec<(String, u32, Vec<String>)> {
    let text = read_in_root(root, "/etc/group");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            Some((f[0].into(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Highest user or group ID a workload may run as (runc's limit). Above it, IDs are
/// refused: `(uid_t)-1` (4294967295) means "unchanged" to setresuid and setresgid, so it
/// would leave the workload root, and the rest are not valid in every kernel interface.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Longest user or group name (LOGIN_NAME_MAX): a longer one names no one, and quoted in
/// an error it would fill the init's message to its parent.
pub const MAX_NAME: usize = 256;

/// A user or group name longer than [`MAX_NAME`]: which part and how long, not the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {part} name is {len} bytes long; at most {MAX_NAME}")]
pub struct NameTooLong {
    /// `user` or `group`.
    pub part: &'static str,
    /// Its length in bytes.
    pub len: usize,
}

/// Why `-u USER[:GROUP]` names no one the workload may run as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A part of the string is longer than any name (`quoted`: its start, see [`quote_start`]).
    #[error("user {quoted}: {source}")]
    NameTooLong {
        quoted: String,
        #[source]
        source: NameTooLong,
    },
    /// An ID above [`MAX_ID`]; `what` names it ("uid", "gid", "supplementary gid").
    #[error("user {spec:?}: {what} {id} is out of range (at most {MAX_ID})")]
    IdOutOfRange {
        spec: String,
        what: &'static str,
        id: u32,
    },
    /// A user name the container's /etc/passwd does not hold.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A group name the container's /etc/group does not hold (and not a number).
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
}

/// Refuses a user string whose user or group part is longer than [`MAX_NAME`]; the error
/// says which part and how long, without quoting it.
pub fn check_name_lengths(spec: &str) -> Result<(), NameTooLong> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    for (part, name) in [("user", user), ("group", group)] {
        if name.len() > MAX_NAME {
            return Err(NameTooLong {
                part,
                len: name.len(),
            });
        }
    }
    Ok(())
}

/// The first characters of `text`, escaped and quoted, `...` marking the cut.
pub fn quote_start(text: &str) -> String {
    const SHOWN: usize = 32;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("\"{}...\"", text[..end].escape_debug()),
        None => format!("{text:?}"),
    }
}

/// Refuses an ID above [`MAX_ID`]; `what` names it ("uid", "gid", "supplementary gid")
/// and `spec` is the user string it came from.
fn check_id(what: &'static str, id: u32, spec: &str) -> Result<u32, UserError> {
    if id > MAX_ID {
        return Err(UserError::IdOutOfRange {
            spec: spec.to_string(),
            what,
            id,
        });
    }
    Ok(id)
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) inside the tree at `root`.
/// Numeric IDs need no passwd entry, as in Docker. Every ID, from the string or from the
/// container's passwd and group files, must be at most [`MAX_ID`].
pub fn resolve(spec: &str, root: &Path) -> Result<ResolvedUser, UserError> {
    check_name_lengths(spec).map_err(|source| UserError::NameTooLong {
        quoted: quote_start(spec),
        source,
    })?;
    let user = resolve_unchecked(spec, root)?;
    check_id("uid", user.uid, spec)?;
    check_id("gid", user.gid, spec)?;
    for gid in &user.additional_gids {
        check_id("supplementary gid", *gid, spec)?;
    }
    Ok(user)
}

/// A process's OCI `user` taken as it is, as runc takes it: exactly these IDs and
/// supplementary groups, never looked up by name in the container's files (so an image's
/// passwd or group entry *named* "1000" cannot change who runs); only HOME comes from the
/// passwd entry whose uid matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactIds {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl ExactIds {
    /// `uid:gid[:g1,g2...]`, the form an annotation carries.
    pub fn to_annotation(&self) -> String {
        let groups: Vec<String> = self.additional_gids.iter().map(u32::to_string).collect();
        format!("{}:{}:{}", self.uid, self.gid, groups.join(","))
    }

    /// Reads [`to_annotation`](Self::to_annotation)'s form; None when it is not that.
    pub fn from_annotation(text: &str) -> Option<ExactIds> {
        let mut parts = text.splitn(3, ':');
        let uid = parts.next()?.parse().ok()?;
        let gid = parts.next()?.parse().ok()?;
        let additional_gids = match parts.next() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(ExactIds {
            uid,
            gid,
            additional_gids,
        })
    }

    /// The user to switch to, the IDs checked against [`MAX_ID`].
    pub fn resolve(&self, root: &Path) -> Result<ResolvedUser, UserError> {
        let spec = self.to_annotation();
        check_id("uid", self.uid, &spec)?;
        check_id("gid", self.gid, &spec)?;
        for g in &self.additional_gids {
            check_id("supplementary gid", *g, &spec)?;
        }
        let home = read_passwd(root)
            .into_iter()
            .find(|e| e.uid == self.uid)
            .map(|e| e.home)
            .unwrap_or_else(|| "/".to_string());
        Ok(ResolvedUser {
            uid: self.uid,
            gid: self.gid,
            additional_gids: self.additional_gids.clone(),
            home,
        })
    }
}

/// Adds the groups of `--group-add` (`names`: names looked up in the container's
/// /etc/group under `root`, or numbers) to `user`'s supplementary groups, as Docker does
/// at start time; each new ID once.
pub fn add_groups(user: &mut ResolvedUser, names: &[String], root: &Path) -> Result<(), UserError> {
    if names.is_empty() {
        return Ok(());
    }
    let groups = read_groups(root);
    for name in names {
        let gid = match name.parse::<u32>() {
            Ok(id) => id, // a number is a gid, never a group's name
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| UserError::UnknownGroup(name.clone()))?,
        };
        check_id("supplementary gid", gid, name)?;
        if !user.additional_gids.contains(&gid) {
            user.additional_gids.push(gid);
        }
    }
    Ok(())
}

fn resolve_unchecked(spec: &str, root: &Path) -> Result<ResolvedUser, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = read_passwd(root);
    // A number is a uid, never a name (as Docker and runc take it): an image's entry
    // *named* "1000" with uid 0 must not make `-u 1000` root.
    let entry = passwd.iter().find(|e| match user.parse::<u32>() {
        Ok(uid) => e.uid == uid,
        Err(_) => e.name == user,
    });
    let (uid, mut gid, name, home) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.clone()), e.home.clone()),
        (None, Ok(uid)) => (uid, 0, None, "/".to_string()),
        (None, Err(_)) => return Err(UserError::UnknownUser(user.to_string())),
    };
    let groups = read_groups(root);
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(id) => id, // a number is a gid, never a group's name
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
        };
    }
    let additional_gids = match (&name, group) {
        (Some(n), None) => groups
            .iter()
            .filter(|(_, id, members)| members.contains(n) && *id != gid)
            .map(|(_, id, _)| *id)
            .collect(),
        _ => vec![],
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn numbers_are_ids_never_names() {
        let dir = root();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "1000:x:0:0:evil:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(etc.join("group"), "1000:x:0:\napp:x:1000:\n").unwrap();
        let u = resolve("1000:1000", dir.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        let mut u = resolve("1000", dir.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        add_groups(&mut u, &["1000".to_string()], dir.path()).unwrap();
        assert!(!u.additional_gids.contains(&0), "{:?}", u.additional_gids);
    }

    #[test]
    fn exact_ids_round_trip_and_refuse_what_is_not_numbers() {
        let ids = ExactIds {
            uid: 1000,
            gid: 100,
            additional_gids: vec![10, 20],
        };
        assert_eq!(ids.to_annotation(), "1000:100:10,20");
        assert_eq!(ExactIds::from_annotation("1000:100:10,20"), Some(ids));
        assert_eq!(
            ExactIds::from_annotation("0:0:").map(|i| i.additional_gids),
            Some(vec![])
        );
        for bad in ["app:0", "0", "0:x", "0:0:a", "-1:0"] {
            assert_eq!(ExactIds::from_annotation(bad), None, "{bad:?}");
        }
    }

    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_and_numbers_resolve() {
        let r = root();
        let app = resolve("app", r.path()).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.home.as_str()),
            (1000, 1000, "/home/app")
        );
        assert_eq!(app.additional_gids, vec![10]);
        let num = resolve("4242:4343", r.path()).unwrap();
        assert_eq!((num.uid, num.gid), (4242, 4343));
        let grp = resolve("app:wheel", r.path()).unwrap();
        assert_eq!(grp.gid, 10);
        assert_eq!(resolve("", r.path()).unwrap().uid, 0);
    }

    #[test]
    fn unknown_names_are_errors() {
        let r = root();
        let err = resolve("nobody", r.path()).unwrap_err();
        assert_eq!(err, UserError::UnknownUser("nobody".into()));
        assert!(err.to_string().contains("nobody"));
        let err = resolve("app:nogroup", r.path()).unwrap_err();
        assert_eq!(err, UserError::UnknownGroup("nogroup".into()));
        assert!(err.to_string().contains("nogroup"));
    }

    #[test]
    fn ids_above_the_signed_range_are_refused() {
        let r = root();
        std::fs::write(
            r.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nevil:x:4294967295:0::/:/bin/sh\nevil2:x:1001:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            r.path().join("etc/group"),
            "root:x:0:\nbig:x:2147483648:\nhuge:x:4294967295:evil2\n",
        )
        .unwrap();
        for (spec, field) in [
            ("4294967295", "uid 4294967295"),
            ("2147483648", "uid 2147483648"),
            ("1000:4294967295", "gid 4294967295"),
            ("0:big", "gid 2147483648"),
            ("evil", "uid 4294967295"),
            ("evil2", "supplementary gid 4294967295"),
        ] {
            let err = resolve(spec, r.path()).unwrap_err().to_string();
            assert!(err.contains(field), "{spec}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let long = "a".repeat(70_000);
        for spec in [long.clone(), format!("app:{long}")] {
            let err = resolve(&spec, r.path()).unwrap_err().to_string();
            assert!(err.contains("70000 bytes long") && err.len() < 200, "{err}");
        }
        let top = resolve("2147483647:2147483647", r.path()).unwrap();
        assert_eq!((top.uid, top.gid), (MAX_ID, MAX_ID));
    }
}
