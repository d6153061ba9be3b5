//! `ps` output: filters, Docker's columns, and `--format` (Go-template fields, `table`,
//! `json`).

use super::print_table;
use crate::container::{id, ContainerStore, State};
use crate::image::ImageStore;
use crate::template::format::{Format, FormatError, Rows};
use crate::template::Shape;
use serde_json::{json, Value};

pub use crate::container::filter::Filter;

/// One container as `ps` shows it.
pub struct Row {
    /// Short (or full) ID.
    pub id: String,
    value: Value,
}

/// Docker's COMMAND column: quoted, truncated to 20 characters with an ellipsis.
fn command_column(cmd: &[String], no_trunc: bool) -> String {
    if cmd.is_empty() {
        return String::new(); // a record that could not be read
    }
    let joined = cmd.join(" ");
    if no_trunc || joined.chars().count() <= 20 {
        return format!("\"{joined}\"");
    }
    let cut: String = joined.chars().take(19).collect();
    format!("\"{cut}…\"")
}

impl Row {
    /// The fields Docker's `ps --format` knows, for container `s` (its labels only
    /// `with_labels`: they cost a read of its image, which the default table never shows).
    pub fn new(
        s: &State,
        store: &ContainerStore,
        no_trunc: bool,
        with_size: bool,
        with_labels: bool,
    ) -> Row {
        let shown_id = if no_trunc {
            s.id.clone()
        } else {
            id::short(&s.id).to_string()
        };
        let created = crate::timefmt::parse_rfc3339(&s.created);
        let size = if with_size {
            let rw = crate::fsutil::disk_usage(&store.dir(&s.id).upper());
            let image = ImageStore::new(store.root())
                .resolve(&s.image_id)
                .map_or(0, |i| i.size());
            let h = crate::timefmt::human_size;
            format!("{} (virtual {})", h(rw), h(rw + image))
        } else {
            String::new()
        };
        let labels = if with_labels {
            crate::container::inspect::labels(store, s)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        };
        let value = json!({
            "ID": shown_id,
            "Labels": labels,
            "Image": s.image,
            "Command": command_column(&s.command, no_trunc),
            "CreatedAt": s.created,
            "RunningFor": created.map(|t| format!("{} ago", crate::timefmt::ago(t))).unwrap_or_default(),
            "Ports": crate::container::network::ports_column(s),
            "State": s.status_word(),
            "Status": s.status_line(),
            "Size": size,
            "Names": s.name,
            "Mounts": "",
            "Networks": std::iter::once(crate::container::network::network_name(s).to_string())
                .chain(s.connected.iter().map(|e| e.network.clone()))
                .collect::<Vec<_>>()
                .join(","),
        });
        Row {
            id: shown_id,
            value,
        }
    }
}

/// Docker's `ps` rows: its formatter context and the title of each field.
const PS_ROWS: Rows = Rows {
    shape: Shape {
        type_name: Some("*formatter.ContainerContext"),
        string_maps: &[],
        maps: &[],
    },
    titles: &[
        ("ID", "CONTAINER ID"),
        ("Names", "NAMES"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("CreatedAt", "CREATED AT"),
        ("RunningFor", "CREATED"),
        ("Ports", "PORTS"),
        ("State", "STATE"),
        ("Status", "STATUS"),
        ("Size", "SIZE"),
        ("Labels", "LABELS"),
        ("Mounts", "MOUNTS"),
        ("Networks", "NETWORKS"),
    ],
};

/// Header of a column of the default table.
fn header(field: &str) -> &str {
    PS_ROWS
        .titles
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, title)| title)
}

/// Prints the rows: Docker's default table, or as `format` says (see
/// crate::template::format).
pub fn print(rows: &[Row], format: &Format, with_size: bool) -> Result<(), FormatError> {
    let values: Vec<Value> = rows.iter().map(|r| r.value.clone()).collect();
    if let Some(text) = format.render(&values, &PS_ROWS)? {
        print!("{text}");
        return Ok(());
    }
    let mut cols = vec![
        "ID",
        "Image",
        "Command",
        "RunningFor",
        "Status",
        "Ports",
        "Names",
    ];
    if with_size {
        cols.push("Size");
    }
    let headers: Vec<&str> = cols.iter().map(|c| header(c)).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| r.value[c].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect();
    print_table(&headers, &cells);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_commands_are_cut_like_docker() {
        let cmd = vec![
            "sh".to_string(),
            "-c".into(),
            "echo hello from a long command".into(),
        ];
        assert_eq!(command_column(&cmd, false), "\"sh -c echo hello fr…\"");
        assert_eq!(command_column(&["true".into()], false), "\"true\"");
    }
}
