//! `stats` output: Docker's columns and units, or `--format` templates.

use super::print_table;
use crate::container::id;
use crate::container::inspect::render_template;
use crate::container::stats::Usage;
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

/// Prints the samples as Docker's table, a template per row, `table TEMPLATE`, or `json`.
pub fn print(usage: &[Usage], format: Option<&str>) -> Result<(), String> {
    let rows: Vec<Value> = usage.iter().map(fields).collect();
    match format.map(str::trim) {
        None | Some("table") => {
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
        }
        Some("json") => rows.iter().for_each(|r| println!("{r}")),
        Some(t) => {
            let (table, template) = match t.strip_prefix("table ") {
                Some(rest) => (true, rest.replace("\\t", "\t")),
                None => (false, t.replace("\\t", "\t").replace("\\n", "\n")),
            };
            let lines = rows
                .iter()
                .map(|r| render_template(&template, &crate::printable::escape_json_strings(r)))
                .collect::<Result<Vec<_>, _>>()?;
            if table {
                let cells: Vec<Vec<String>> = lines
                    .iter()
                    .map(|l| l.split('\t').map(String::from).collect())
                    .collect();
                let titles: Vec<String> = template
                    .split('\t')
                    .map(|c| {
                        c.trim()
                            .trim_start_matches("{{")
                            .trim_end_matches("}}")
                            .trim()
                            .trim_start_matches('.')
                            .to_ascii_uppercase()
                    })
                    .collect();
                let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
                print_table(&titles, &cells);
            } else {
                lines.iter().for_each(|l| println!("{l}"));
            }
        }
    }
    Ok(())
}
