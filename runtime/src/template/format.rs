//! Docker's `--format` for lists (`ps`, `images`, `stats`, `network ls`, `volume ls`,
//! `system df`): the verb's own table, `table TEMPLATE` (a header row from the column
//! titles, then a row per item, aligned as Docker aligns them), `json` (one object per
//! line), or any other template, run once per row.

use super::{tabwriter, Shape, Template, TemplateError};
use crate::printable::escape_json_strings;
use serde_json::Value;

/// What one verb's rows are: how a template sees them and their columns' titles.
#[derive(Debug, Clone, Copy)]
pub struct Rows {
    /// Go's view of a row (Docker's formatter context).
    pub shape: Shape,
    /// Field name to column title, as Docker's header for each field.
    pub titles: &'static [(&'static str, &'static str)],
}

/// A `--format` that is not a template: Docker's words for it.
#[derive(Debug, thiserror::Error)]
#[error("template parsing error: {0}")]
pub struct FormatError(#[from] pub TemplateError);

/// How `inspect`'s documents look to a template: structs (Docker decodes a document into
/// its types, and when a field is not there, into maps that say "map has no entry for
/// key"), with Docker's maps: labels and options of strings, networks, ports, volumes.
pub const INSPECT: Shape = Shape {
    type_name: None,
    string_maps: &[
        "Labels",
        "Options",
        "DriverOpts",
        "Annotations",
        "Sysctls",
        "StorageOpt",
        "Tmpfs",
        "Data",
    ],
    maps: &["Networks", "Ports", "ExposedPorts", "Volumes", "Containers"],
};

/// Docker's `volume ls` rows: its formatter context and the title of each field (rows
/// hold `Name`, `Driver`, `Scope`, `Mountpoint`, `Labels`, `Links`, `Size` as strings).
pub const VOLUME_ROWS: Rows = Rows {
    shape: Shape {
        type_name: Some("*formatter.volumeContext"),
        string_maps: &[],
        maps: &[],
    },
    titles: &[
        ("Name", "VOLUME NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("Mountpoint", "MOUNTPOINT"),
        ("Labels", "LABELS"),
        ("Links", "LINKS"),
        ("Size", "SIZE"),
    ],
};

/// An `inspect -f` template that does not parse or fails: Docker's words for it.
#[derive(Debug, thiserror::Error)]
#[error("Template parsing error: {0}")]
pub struct InspectFormatError(#[from] pub TemplateError);

/// A parsed `--format` value.
#[derive(Debug, Clone)]
pub enum Format {
    /// No format, "" or `table`: the verb's own table.
    Default,
    /// `json`: each row as one line of JSON.
    Json,
    /// `table TEMPLATE`: a header row, then the rows, aligned.
    Table(Template),
    /// Any other template: run once per row, each followed by a newline.
    Rows(Template),
}

impl Format {
    /// Reads a `--format` value as Docker does: a `table` prefix, and `\t` and `\n`
    /// written as two characters stand for a tab and a newline.
    pub fn parse(flag: Option<&str>) -> Result<Format, FormatError> {
        let Some(text) = flag else {
            return Ok(Format::Default);
        };
        let text = text.trim();
        if text.is_empty() || text == "table" {
            return Ok(Format::Default);
        }
        if text == "json" {
            return Ok(Format::Json);
        }
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) => (true, rest.trim_matches(' ')),
            None => (false, text),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let template = Template::parse(&body)?;
        Ok(if table {
            Format::Table(template)
        } else {
            Format::Rows(template)
        })
    }

    /// Whether the rows could show field `name` (`json` shows every field; the default
    /// table is the verb's to say).
    pub fn could_show(&self, name: &str) -> bool {
        match self {
            Format::Default => false,
            Format::Json => true,
            Format::Table(t) | Format::Rows(t) => t.could_read(name),
        }
    }

    /// Whether the verb's own table is wanted.
    pub fn is_default(&self) -> bool {
        matches!(self, Format::Default)
    }

    /// The rows as Docker prints them; None for [`Format::Default`], which the verb
    /// prints itself. Row values are escaped for the terminal before a template sees
    /// them (JSON escapes its own).
    pub fn render(&self, rows: &[Value], kind: &Rows) -> Result<Option<String>, FormatError> {
        let render_rows = |template: &Template| -> Result<String, FormatError> {
            let mut out = String::new();
            for row in rows {
                out.push_str(&template.render(&escape_json_strings(row), &kind.shape)?);
                out.push('\n');
            }
            Ok(out)
        };
        Ok(Some(match self {
            Format::Default => return Ok(None),
            Format::Json => rows.iter().map(|r| format!("{r}\n")).collect(),
            Format::Rows(template) => render_rows(template)?,
            Format::Table(template) => {
                let body = render_rows(template)?;
                let header = template.render_header(kind.titles);
                tabwriter::align(&format!("{header}\n{body}"))
            }
        }))
    }
}

/// Parses `flag` and renders `rows` with it in one step (see [`Format::render`]): what a
/// verb's `--format` needs when it has all its rows at once.
pub fn render_rows(
    flag: Option<&str>,
    rows: &[Value],
    kind: &Rows,
) -> Result<Option<String>, FormatError> {
    Format::parse(flag)?.render(rows, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROWS: Rows = Rows {
        shape: Shape {
            type_name: Some("*formatter.ContainerContext"),
            string_maps: &[],
            maps: &[],
        },
        titles: &[("Names", "NAMES"), ("ID", "CONTAINER ID")],
    };

    fn rows() -> Vec<Value> {
        vec![
            json!({"Names": "web", "ID": "0123456789ab"}),
            json!({"Names": "a-much-longer-name", "ID": "ba9876543210"}),
        ]
    }

    fn render(flag: &str) -> String {
        render_rows(Some(flag), &rows(), &ROWS).unwrap().unwrap()
    }

    #[test]
    fn table_templates_get_dockers_header_and_alignment() {
        assert_eq!(
            render("table {{.Names}}\\t{{.ID}}"),
            "NAMES                CONTAINER ID\n\
             web                  0123456789ab\n\
             a-much-longer-name   ba9876543210\n"
        );
        assert_eq!(
            render("{{.Names}}:{{truncate .ID 3}}"),
            "web:012\na-much-longer-name:ba9\n"
        );
        assert_eq!(
            render("json"),
            "{\"ID\":\"0123456789ab\",\"Names\":\"web\"}\n{\"ID\":\"ba9876543210\",\"Names\":\"a-much-longer-name\"}\n"
        );
        assert!(render_rows(Some("table"), &rows(), &ROWS)
            .unwrap()
            .is_none());
        assert!(render_rows(None, &rows(), &ROWS).unwrap().is_none());
        // With no rows, a table is its header alone.
        assert_eq!(
            render_rows(Some("table {{.ID}}"), &[], &ROWS)
                .unwrap()
                .unwrap(),
            "CONTAINER ID\n"
        );
    }

    #[test]
    fn templates_see_escaped_text() {
        let rows = vec![json!({"Names": "evil\n\u{1b}[2J", "ID": "x"})];
        let out = render_rows(Some("{{.Names}}"), &rows, &ROWS)
            .unwrap()
            .unwrap();
        assert_eq!(out, "evil\\n\\x1b[2J\n");
    }

    #[test]
    fn bad_templates_are_reported_as_docker_reports_them() {
        let e = render_rows(Some("{{foo}}"), &rows(), &ROWS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "template parsing error: template: :1: function \"foo\" not defined"
        );
        let e = render_rows(Some("{{.Nope}}"), &rows(), &ROWS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "template parsing error: template: :1:2: executing \"\" at <.Nope>: can't evaluate field Nope in type *formatter.ContainerContext"
        );
    }
}
