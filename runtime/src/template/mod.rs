//! Go's text/template over JSON values, for every `--format`/`-f` (Docker's CLI formats
//! its output with Go templates; users' scripts depend on their exact behaviour).
//!
//! - [`lex`] cuts a template into tokens, [`parse`] builds and checks its tree (functions
//!   and variables must exist), [`exec`] runs it over a value;
//! - [`value`] is how a template sees JSON: Go's structs (a missing field is an error) and
//!   maps (a missing key is `<no value>`), printed as Go prints them;
//! - [`funcs`] and [`printf`] are the functions: Go's builtins and Docker's additions;
//! - [`format`] is Docker's `--format` for lists: `table`, `json`, or a template per row,
//!   aligned by [`tabwriter`] as Docker aligns them.
//!
//! Error messages are Go's (`template: :1: function "foo" not defined`,
//! `template: :1:2: executing "" at <.Nope>: can't evaluate field Nope in type T`).

mod exec;
pub mod format;
mod funcs;
mod lex;
mod parse;
mod printf;
mod tabwriter;
mod value;

pub use value::Shape;

use funcs::FuncSet;
use serde_json::Value;
use std::collections::BTreeMap;
use value::{Val, Zero};

/// A template that does not parse, or fails while it runs; displayed as Go displays it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// The text is not a template.
    #[error("template: :{line}: {message}")]
    Parse { line: usize, message: String },
    /// The template failed on this value.
    #[error("template: :{line}:{column}: executing {template:?} at <{context}>: {message}")]
    Exec {
        /// The defined template being run ("" for the main one).
        template: String,
        line: usize,
        /// Bytes from the start of the line, as Go counts.
        column: usize,
        /// The failing node's text.
        context: String,
        message: String,
    },
}

/// A parsed template, ready to run over any number of values.
#[derive(Debug, Clone)]
pub struct Template {
    tree: parse::Tree,
    text: String,
}

impl Template {
    /// Parses `text` with Go's builtins and Docker's functions.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let tree = parse::parse(text, &funcs::exists).map_err(|f| TemplateError::Parse {
            line: f.line,
            message: f.message,
        })?;
        Ok(Template {
            tree,
            text: text.to_string(),
        })
    }

    /// Whether the template could read field `name` of its data (a verb computes a costly
    /// field only when it could be shown).
    pub fn could_read(&self, name: &str) -> bool {
        self.tree.could_read(name)
    }

    /// The template run over `data`, typed by `shape`.
    pub fn render(&self, data: &Value, shape: &Shape) -> Result<String, TemplateError> {
        let mut exec = exec::Exec::new(&self.tree, FuncSet::Docker, Some(shape));
        match exec.run(&Val::from_json(data, shape)) {
            Ok(()) => Ok(exec.out),
            Err(f) => Err(self.exec_error(f)),
        }
    }

    /// The template run over column titles (a `table` format's header), with Docker's
    /// header functions, which leave titles as they are. As in Docker, a header that
    /// fails part way is printed as far as it got.
    pub(crate) fn render_header(&self, titles: &[(&str, &str)]) -> String {
        let titles: BTreeMap<String, Val> = titles
            .iter()
            .map(|(field, title)| (field.to_string(), Val::Str(title.to_string())))
            .collect();
        let mut exec = exec::Exec::new(&self.tree, FuncSet::DockerHeader, None);
        let _ = exec.run(&Val::Map(titles, Zero::EmptyString));
        exec.out
    }

    fn exec_error(&self, f: exec::ExecFailure) -> TemplateError {
        let before = &self.text[..f.pos.min(self.text.len())];
        let (line, column) = match before.rfind('\n') {
            Some(nl) => (1 + before.matches('\n').count(), f.pos - nl - 1),
            None => (1, f.pos),
        };
        TemplateError::Exec {
            template: f.template,
            line,
            column,
            context: f.context,
            message: f.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONTEXT: Shape = Shape {
        type_name: Some("*formatter.ContainerContext"),
        string_maps: &["Labels"],
        maps: &["Networks"],
    };
    const DOCUMENT: Shape = Shape {
        type_name: None,
        string_maps: &["Labels"],
        maps: &["Networks"],
    };

    fn doc() -> Value {
        json!({
            "Id": "abc",
            "State": {"Pid": 42, "Running": true, "Status": "running"},
            "Config": {"Labels": {"x": "1", "y": "2"}, "Env": ["A=1", "B=2"], "Cmd": ["sh", "-c", "true"]},
            "NetworkSettings": {"Networks": {
                "bridge": {"IPAddress": "10.88.0.2", "Gateway": "10.88.0.1"},
                "other": {"IPAddress": "10.89.0.2", "Gateway": "10.89.0.1"}
            }},
            "Mounts": [{"Source": "/a", "Destination": "/b", "RW": true}],
            "Size": 1.5,
            "Count": 3,
            "Empty": [],
            "Null": null
        })
    }

    fn render(text: &str) -> String {
        Template::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .render(&doc(), &DOCUMENT)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn exec_error(text: &str, shape: &Shape) -> String {
        Template::parse(text)
            .unwrap()
            .render(&doc(), shape)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn docker_users_templates() {
        assert_eq!(render("{{.State.Pid}}"), "42");
        assert_eq!(
            render("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"),
            "10.88.0.2 10.89.0.2 "
        );
        assert_eq!(render(r#"{{index .Config.Labels "x"}}"#), "1");
        assert_eq!(render(r#"[{{index .Config.Labels "nope"}}]"#), "[]");
        assert_eq!(render("{{.Config.Labels.nope}}"), "<no value>");
        // A map Docker's types always have is an empty map when the document lacks it.
        assert_eq!(
            render(r#"[{{index .State.Labels "x"}}]{{len .State.Networks}}"#),
            "[]0"
        );
        assert_eq!(
            render("{{json .Mounts}}"),
            r#"[{"Destination":"/b","RW":true,"Source":"/a"}]"#
        );
        assert_eq!(
            render("{{.Config.Env}} {{.Config.Labels}}"),
            "[A=1 B=2] map[x:1 y:2]"
        );
        assert_eq!(render("{{join .Config.Cmd \" \"}}"), "sh -c true");
        assert_eq!(
            render("{{.Null}} {{.Size}} {{.State}}"),
            "<nil> 1.5 {42 true running}"
        );
    }

    #[test]
    fn control_structures_and_variables() {
        assert_eq!(render("{{if .State.Running}}up{{else}}down{{end}}"), "up");
        assert_eq!(render("{{if .Empty}}x{{else if .Count}}y{{end}}"), "y");
        assert_eq!(render("{{with .State}}{{.Status}}{{end}}"), "running");
        assert_eq!(render("{{with .Empty}}x{{else}}none{{end}}"), "none");
        assert_eq!(render("{{range .Empty}}x{{else}}empty{{end}}"), "empty");
        assert_eq!(
            render("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}"),
            "x=1;y=2;"
        );
        assert_eq!(
            render("{{range $i, $e := .Config.Env}}{{if $i}},{{end}}{{$e}}{{end}}"),
            "A=1,B=2"
        );
        assert_eq!(render("{{range $i := 3}}{{$i}}{{end}}"), "012");
        assert_eq!(
            render("{{range .Config.Env}}{{if eq . \"B=2\"}}{{break}}{{end}}{{.}}{{end}}"),
            "A=1"
        );
        assert_eq!(
            render("{{range .Config.Env}}{{if eq . \"A=1\"}}{{continue}}{{end}}{{.}}{{end}}"),
            "B=2"
        );
        assert_eq!(
            render("{{$x := .Id}}{{$x = \"new\"}}{{$x}} {{$.Id}}"),
            "new abc"
        );
        assert_eq!(render("{{(index .Mounts 0).Source}}"), "/a");
        assert_eq!(render("{{.Id | upper | printf \"<%s>\"}}"), "<ABC>");
        assert_eq!(render("{{and .Count .Id}} {{or .Empty .Null 0}}"), "abc 0");
        assert_eq!(render("{{len .Config.Env}} {{slice .Id 1}}"), "2 bc");
        assert_eq!(render("{{- /* note */ -}}  {{.Id}}  {{- \"!\"}}"), "abc!");
        assert_eq!(
            render("{{define \"t\"}}<{{.}}>{{end}}{{template \"t\" .Id}}"),
            "<abc>"
        );
        assert_eq!(render("{{block \"b\" .Count}}[{{.}}]{{end}}"), "[3]");
        assert_eq!(render("{{println .Id}}"), "abc\n");
    }

    #[test]
    fn errors_are_dockers() {
        let parse = |t: &str| Template::parse(t).unwrap_err().to_string();
        assert_eq!(
            parse("{{foo}}"),
            "template: :1: function \"foo\" not defined"
        );
        assert_eq!(parse("{{.ID"), "template: :1: unclosed action");
        assert_eq!(parse("x\n{{if .A}}"), "template: :2: unexpected EOF in if");
        assert_eq!(
            exec_error("{{.Nope}}", &CONTEXT),
            "template: :1:2: executing \"\" at <.Nope>: can't evaluate field Nope in type *formatter.ContainerContext"
        );
        assert_eq!(
            exec_error("ab\n {{.State.Nope}}", &DOCUMENT),
            "template: :2:3: executing \"\" at <.State.Nope>: map has no entry for key \"Nope\""
        );
        assert_eq!(
            exec_error("{{index .Config.Env 5}}", &DOCUMENT),
            "template: :1:2: executing \"\" at <index .Config.Env 5>: error calling index: index out of range: 5"
        );
        assert_eq!(
            exec_error("{{upper .Count}}", &DOCUMENT),
            "template: :1:8: executing \"\" at <.Count>: wrong type for value; expected string; got int"
        );
        assert_eq!(
            exec_error("{{range .State}}{{end}}", &DOCUMENT),
            "template: :1:8: executing \"\" at <{{range .State}}>: range can't iterate over {42 true running}"
        );
        assert_eq!(
            exec_error("{{.Id.X}}", &DOCUMENT),
            "template: :1:2: executing \"\" at <.Id.X>: can't evaluate field X in type string"
        );
        let recursive = "{{define \"r\"}}{{template \"r\" .}}{{end}}{{template \"r\" .}}";
        assert!(exec_error(recursive, &DOCUMENT).contains("exceeded maximum template depth (100)"));
    }

    #[test]
    fn headers_keep_titles_through_dockers_functions() {
        let t = Template::parse("{{.Names | upper}}\t{{truncate .ID 3}}\t{{.Other}}").unwrap();
        assert_eq!(
            t.render_header(&[("Names", "NAMES"), ("ID", "CONTAINER ID")]),
            "NAMES\tCONTAINER ID\t<no value>"
        );
    }

    /// Templates come from users: none, however malformed, may panic.
    #[test]
    fn no_template_panics() {
        const PIECES: [&str; 44] = [
            "{{",
            "}}",
            "{{-",
            " -}}",
            " ",
            ".",
            ".Id",
            ".State",
            ".Pid",
            ".Config.Labels",
            "$",
            "$x",
            ":=",
            "=",
            ",",
            "|",
            "(",
            ")",
            "\"",
            "`",
            "'",
            "\\",
            "0x",
            "-1",
            "1.5e",
            "é",
            "if",
            "else",
            "end",
            "range",
            "with",
            "define",
            "template",
            "block",
            "break",
            "index",
            "slice",
            "printf \"%*.*[2]d\"",
            "json",
            "truncate",
            "len",
            "eq",
            "nil",
            "/*",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let n = 1 + next() % 12;
            let text: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            if let Ok(t) = Template::parse(&text) {
                let _ = t.render(&doc(), &DOCUMENT);
                let _ = t.render_header(&[("Id", "ID")]);
            }
        }
    }
}
