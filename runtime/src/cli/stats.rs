//! `stats` output: Docker's columns and units, or `--format` templates.

use super::print_table;
use crate::container::id;
use crate::container::stats::Usage;
use crate::template::format::{Format, FormatError, Rows};
use crate::template::Shape;
use crate::timefmt::{bytes_size, human_size};
use serde_json::{json, Value};

fn fields(u: &Usage) -> Value {
    let mem_percent = if u.memory_limit > 0 {
        u.memory as f64 / u.memory_limit as f64 * 100.0
    } else {
        0.0
    };
    json!({
        "Container": id::short(&u.id),
        "ID": u.id,
        "Name": u.name,
        "CPUPerc": format!("{:.2}%", u.cpu_percent),
        "MemUsage": format!("{} / {}", bytes_size(u.memory), bytes_size(u.memory_limit)),
        "MemPerc": format!("{mem_percent:.2}%"),
        "NetIO": format!("{} / {}", human_size(u.net.0), human_size(u.net.1)),
        "BlockIO": format!("{} / {}", human_size(u.block.0), human_size(u.block.1)),
        "PIDs": u.pids.to_string(),
    })
}

/// Docker's `stats` rows: its formatter context and the title of each field.
const STATS_ROWS: Rows = Rows {
    shape: Shape {
        type_name: Some("*container.statsContext"),
        string_maps: &[],
        maps: &[],
    },
    titles: &[
        ("Container", "CONTAINER"),
        ("Name", "NAME"),
        ("ID", "CONTAINER ID"),
        ("CPUPerc", "CPU %"),
        ("MemUsage", "MEM USAGE / LIMIT"),
        ("MemPerc", "MEM %"),
        ("NetIO", "NET I/O"),
        ("BlockIO", "BLOCK I/O"),
        ("PIDs", "PIDS"),
    ],
};

/// Prints the samples as Docker's table, or as `format` says (see
/// crate::template::format).
pub fn print(usage: &[Usage], format: &Format) -> Result<(), FormatError> {
    let rows: Vec<Value> = usage.iter().map(fields).collect();
    if let Some(text) = format.render(&rows, &STATS_ROWS)? {
        print!("{text}");
        return Ok(());
    }
    let cols = [
        "Container",
        "Name",
        "CPUPerc",
        "MemUsage",
        "MemPerc",
        "NetIO",
        "BlockIO",
        "PIDs",
    ];
    // The first column holds the short ID, under Docker's title for an ID.
    let headers = [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| r[c].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect();
    print_table(&headers, &cells);
    Ok(())
}
