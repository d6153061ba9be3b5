//! Which containers a listing shows (`ps -f KEY=VALUE`, the Engine API's `filters`):
//! values of one key are alternatives, different keys all apply.

use super::{ContainerStore, State};
use crate::image::ImageStore;

/// The filters asked, by key.
#[derive(Debug, Default)]
pub struct Filter {
    status: Vec<String>,
    name: Vec<String>,
    ancestor: Vec<String>,
    id: Vec<String>,
    label: Vec<String>,
    exited: Vec<i32>,
    before: Vec<String>,
    since: Vec<String>,
    network: Vec<String>,
    volume: Vec<String>,
    health: Vec<String>,
}

/// A filter a listing does not take (Docker's words).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// Holds the value as given.
    #[error("bad format of filter {0:?} (expected name=value)")]
    NotKeyValue(String),
    /// Holds the status given.
    #[error("invalid filter 'status={0}' (one of {states})", states = STATES.join(", "))]
    Status(String),
    /// Holds the value given to `exited`.
    #[error("invalid filter 'exited={0}': not an exit code")]
    Exited(String),
    /// Holds the health given.
    #[error(
        "Unrecognised filter value for health: {0} (one of starting, healthy, unhealthy, none)"
    )]
    Health(String),
    /// Holds the key given.
    #[error("invalid filter {0:?} (supported: {keys})", keys = KEYS.join(", "))]
    Key(String),
}

/// The container states a `status=` filter names.
const STATES: [&str; 7] = [
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// The keys taken.
const KEYS: [&str; 11] = [
    "status", "name", "ancestor", "id", "label", "exited", "before", "since", "network", "volume",
    "health",
];

impl Filter {
    /// Parses `KEY=VALUE` items (`ps -f`).
    pub fn parse(list: &[String]) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for item in list {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| FilterError::NotKeyValue(item.clone()))?;
            f.add(k, v)?;
        }
        Ok(f)
    }

    /// Adds one value of key `key`.
    pub fn add(&mut self, key: &str, value: &str) -> Result<(), FilterError> {
        let slot = match key {
            "status" => {
                if !STATES.contains(&value) {
                    return Err(FilterError::Status(value.to_string()));
                }
                &mut self.status
            }
            "exited" => {
                let code = value
                    .parse()
                    .map_err(|_| FilterError::Exited(value.to_string()))?;
                self.exited.push(code);
                return Ok(());
            }
            "name" => &mut self.name,
            "ancestor" => &mut self.ancestor,
            "id" => &mut self.id,
            "label" => &mut self.label,
            "before" => &mut self.before,
            "since" => &mut self.since,
            "network" => &mut self.network,
            "volume" => &mut self.volume,
            "health" => {
                if !["starting", "healthy", "unhealthy", "none"].contains(&value) {
                    return Err(FilterError::Health(value.to_string()));
                }
                &mut self.health
            }
            _ => return Err(FilterError::Key(key.to_string())),
        };
        slot.push(value.to_string());
        Ok(())
    }

    /// Whether no filter was given.
    pub fn is_empty(&self) -> bool {
        self.status.is_empty()
            && self.name.is_empty()
            && self.ancestor.is_empty()
            && self.id.is_empty()
            && self.label.is_empty()
            && self.exited.is_empty()
            && self.before.is_empty()
            && self.since.is_empty()
            && self.network.is_empty()
            && self.volume.is_empty()
            && self.health.is_empty()
    }

    /// Whether container `s` passes.
    pub fn matches(&self, s: &State, store: &ContainerStore) -> bool {
        let any = |list: &[String], pred: &dyn Fn(&str) -> bool| {
            list.is_empty() || list.iter().any(|v| pred(v))
        };
        // `before`/`since` name a container; one that does not exist matches nothing.
        let created_of = |v: &str| {
            store
                .resolve(v)
                .and_then(|id| store.load(&id))
                .map(|c| c.created)
                .ok()
        };
        any(&self.status, &|v| v == s.status_word())
            && any(&self.name, &|v| s.name.contains(v.trim_start_matches('/')))
            && any(&self.id, &|v| s.id.starts_with(v))
            && any(&self.ancestor, &|v| {
                v == s.image
                    || ImageStore::new(store.root())
                        .resolve(v)
                        .is_ok_and(|img| img.id == s.image_id)
            })
            && (self.label.is_empty() || {
                // Every label asked must be there (Docker's rule for `label`).
                let labels = super::inspect::labels(store, s);
                self.label.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                    None => labels.contains_key(l.as_str()),
                })
            })
            && (self.exited.is_empty()
                || (s.status == super::Status::Exited
                    && self.exited.contains(&s.exit_code.unwrap_or(0))))
            && self
                .before
                .iter()
                .all(|v| created_of(v).is_some_and(|t| s.created < t))
            && self
                .since
                .iter()
                .all(|v| created_of(v).is_some_and(|t| s.created > t))
            && any(&self.network, &|v| {
                super::network::network_name(s) == v || s.endpoints().any(|e| e.network == v)
            })
            && any(&self.volume, &|v| {
                s.volumes.iter().any(|name| name == v) || mounts_path(store, s, v)
            })
            && any(&self.health, &|v| {
                v == s.health.as_ref().map_or("none", |h| h.status.as_str())
            })
    }
}

/// Whether container `s` mounts something at `path` (a `volume=` filter naming a
/// destination), read from its OCI spec.
fn mounts_path(store: &ContainerStore, s: &State, path: &str) -> bool {
    let Ok(bytes) = std::fs::read(store.dir(&s.id).config()) else {
        return false;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    spec["mounts"].as_array().is_some_and(|mounts| {
        mounts
            .iter()
            .any(|m| m["destination"] == path || m["source"] == path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_unknown_keys() {
        assert!(Filter::parse(&["status=exited".into(), "name=web".into()]).is_ok());
        assert!(Filter::parse(&["label=a=b".into(), "exited=0".into()]).is_ok());
        let message = |f: &str| Filter::parse(&[f.into()]).unwrap_err().to_string();
        assert_eq!(
            message("status=sleepy"),
            "invalid filter 'status=sleepy' (one of created, restarting, running, removing, \
             paused, exited, dead)"
        );
        assert!(message("colour=red").starts_with("invalid filter \"colour\" (supported: status"));
        assert_eq!(
            message("exited=x"),
            "invalid filter 'exited=x': not an exit code"
        );
        assert!(Filter::parse(&["nonsense".into()]).is_err());
    }
}
