//! The parser: tokens into a tree of text, actions and control structures, checked as Go's
//! parser checks them (functions and variables must be defined, `break` only in `range`).

use super::lex::{lex, Tok, Token};
use std::collections::BTreeMap;
use std::fmt;

/// How deep parentheses and control structures may nest: far beyond any real template,
/// well within the thread's stack.
const MAX_DEPTH: usize = 200;

/// A list of nodes (the body of a template, an `if`, a `range`...).
pub(super) type List = Vec<Node>;

/// One node of a template.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    Range(Branch),
    With(Branch),
    /// `{{template "name" pipeline}}`.
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

/// The shared shape of `if`, `range` and `with`.
#[derive(Debug, Clone)]
pub(super) struct Branch {
    pub pipe: Pipe,
    pub list: List,
    pub else_list: Option<List>,
}

/// A pipeline: optional variable declarations, then commands joined by `|`.
#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub pos: usize,
    /// Variables declared (`:=`) or assigned (`=`).
    pub decl: Vec<String>,
    pub is_assign: bool,
    pub cmds: Vec<Command>,
}

/// One command: a function and its arguments, or a single operand.
#[derive(Debug, Clone)]
pub(super) struct Command {
    pub pos: usize,
    pub args: Vec<Arg>,
}

/// An operand.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.A.B`.
    Field(usize, Vec<String>),
    /// `$x.A.B`.
    Variable(usize, String, Vec<String>),
    /// `(pipeline).A.B`, or a field of any other operand.
    Chain(usize, Box<Arg>, Vec<String>),
    /// A function name.
    Ident(usize, String),
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    Number(usize, String, Number),
    /// A string as written and its value.
    Str(usize, String, String),
    Pipe(Box<Pipe>),
}

/// A number constant, as Go types it: an integer if it is one, else a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Number {
    Int(i64),
    Float(f64),
}

impl Arg {
    pub fn pos(&self) -> usize {
        match self {
            Arg::Field(p, _)
            | Arg::Variable(p, _, _)
            | Arg::Chain(p, _, _)
            | Arg::Ident(p, _)
            | Arg::Dot(p)
            | Arg::Nil(p)
            | Arg::Bool(p, _)
            | Arg::Number(p, _, _)
            | Arg::Str(p, _, _) => *p,
            Arg::Pipe(p) => p.pos,
        }
    }
}

/// A parsed template: its body and the templates it defines.
#[derive(Debug, Clone)]
pub(super) struct Tree {
    pub root: List,
    pub defined: BTreeMap<String, List>,
}

impl Tree {
    /// Whether running the tree could read field `name` of its data: a field of that
    /// name anywhere, or the data (or a variable) used whole (`{{json .}}`, `{{$x}}`).
    /// Conservative: verbs skip costly fields no template can show.
    pub fn could_read(&self, name: &str) -> bool {
        self.defined
            .values()
            .chain(std::iter::once(&self.root))
            .any(|list| list_reads(list, name))
    }
}

fn list_reads(list: &List, name: &str) -> bool {
    list.iter().any(|node| match node {
        Node::Text(_) | Node::Break | Node::Continue => false,
        Node::Action(p) => pipe_reads(p, name),
        Node::If(b) | Node::Range(b) | Node::With(b) => {
            pipe_reads(&b.pipe, name)
                || list_reads(&b.list, name)
                || b.else_list.as_ref().is_some_and(|l| list_reads(l, name))
        }
        Node::Template { pipe, .. } => pipe.as_ref().is_none_or(|p| pipe_reads(p, name)),
    })
}

fn pipe_reads(pipe: &Pipe, name: &str) -> bool {
    pipe.cmds
        .iter()
        .flat_map(|c| &c.args)
        .any(|a| arg_reads(a, name))
}

fn arg_reads(arg: &Arg, name: &str) -> bool {
    match arg {
        Arg::Field(_, idents) => idents.iter().any(|i| i == name),
        Arg::Variable(_, _, idents) => idents.is_empty() || idents.iter().any(|i| i == name),
        Arg::Chain(_, node, idents) => arg_reads(node, name) || idents.iter().any(|i| i == name),
        Arg::Dot(_) => true,
        Arg::Pipe(p) => pipe_reads(p, name),
        Arg::Ident(..) | Arg::Nil(_) | Arg::Bool(..) | Arg::Number(..) | Arg::Str(..) => false,
    }
}

/// A parse error: the line it is on and Go's message.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ParseFailure {
    pub line: usize,
    pub message: String,
}

/// Parses `text`; `functions` says which names are functions.
pub(super) fn parse(text: &str, functions: &dyn Fn(&str) -> bool) -> Result<Tree> {
    let mut p = Parser {
        text,
        tokens: lex(text),
        next: 0,
        functions,
        vars: vec!["$".to_string()],
        range_depth: 0,
        depth: 0,
        defined: BTreeMap::new(),
    };
    let root = p.top_level()?;
    Ok(Tree {
        root,
        defined: p.defined,
    })
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    next: usize,
    functions: &'a dyn Fn(&str) -> bool,
    /// Variables in scope, innermost last.
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
    defined: BTreeMap<String, List>,
}

/// What ended a list.
enum End {
    End,
    /// `{{else}}`, or `{{else if ...}}` / `{{else with ...}}` (the keyword's position kept
    /// for the chained branch).
    Else(Option<(&'static str, usize)>),
}

type Result<T> = std::result::Result<T, ParseFailure>;

impl Parser<'_> {
    fn line_of(&self, pos: usize) -> usize {
        1 + self.text[..pos.min(self.text.len())].matches('\n').count()
    }

    fn fail<T>(&self, pos: usize, message: impl Into<String>) -> Result<T> {
        Err(ParseFailure {
            line: self.line_of(pos),
            message: message.into(),
        })
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn take(&mut self) -> Token {
        let t = self.peek().clone();
        if self.next < self.tokens.len() - 1 {
            self.next += 1;
        }
        t
    }

    fn skip_space(&mut self) {
        while self.peek().tok == Tok::Space {
            self.take();
        }
    }

    fn take_non_space(&mut self) -> Token {
        self.skip_space();
        self.take()
    }

    fn peek_non_space(&mut self) -> Tok {
        self.skip_space();
        self.peek().tok.clone()
    }

    /// A lexing error where the parser meets it.
    fn lex_error<T>(&self, t: &Token) -> Result<T> {
        match &t.tok {
            Tok::Error(e) => self.fail(t.pos, e.to_string()),
            _ => self.fail(t.pos, "unexpected token"),
        }
    }

    fn top_level(&mut self) -> Result<List> {
        let mut list = Vec::new();
        loop {
            let t = self.take();
            match t.tok {
                Tok::Eof => return Ok(list),
                Tok::Text(s) => list.push(Node::Text(s)),
                Tok::Open => {
                    let kw = self.peek_non_space();
                    if kw == Tok::Keyword("define") {
                        self.take();
                        self.define(t.pos)?;
                        continue;
                    }
                    match self.action(t.pos)? {
                        Ok(node) => list.push(node),
                        Err(End::End) => return self.fail(t.pos, "unexpected {{end}}"),
                        Err(End::Else(_)) => return self.fail(t.pos, "unexpected {{else}}"),
                    }
                }
                _ => return self.lex_error(&t),
            }
        }
    }

    /// The nodes up to `{{end}}` or `{{else}}`.
    fn list(&mut self, context: &str) -> Result<(List, End)> {
        let mut list = Vec::new();
        loop {
            let t = self.take();
            match t.tok {
                Tok::Eof => return self.fail(t.pos, format!("unexpected EOF in {context}")),
                Tok::Text(s) => list.push(Node::Text(s)),
                Tok::Open => match self.action(t.pos)? {
                    Ok(node) => list.push(node),
                    Err(end) => return Ok((list, end)),
                },
                _ => return self.lex_error(&t),
            }
        }
    }

    fn close(&mut self, context: &str) -> Result<()> {
        let t = self.take_non_space();
        match t.tok {
            Tok::Close => Ok(()),
            Tok::Error(_) => self.lex_error(&t),
            other => self.fail(
                t.pos,
                format!("unexpected {} in {context}", describe(&other)),
            ),
        }
    }

    /// An action after its `{{`: a node, or the `end`/`else` that ends the current list.
    fn action(&mut self, pos: usize) -> Result<std::result::Result<Node, End>> {
        let t = self.peek_non_space();
        let kw_pos = self.peek().pos;
        if let Tok::Keyword(k) = t {
            self.take();
            return match k {
                "end" => {
                    self.close("end")?;
                    Ok(Err(End::End))
                }
                "else" => {
                    let next = self.peek_non_space();
                    if let Tok::Keyword(chained @ ("if" | "with")) = next {
                        // `{{else if x}}`: the `if` starts a branch inside the else.
                        return Ok(Err(End::Else(Some((chained, kw_pos)))));
                    }
                    self.close("else")?;
                    Ok(Err(End::Else(None)))
                }
                "if" | "range" | "with" => self.branch(k, pos).map(Ok),
                "template" => self.template_call(pos).map(Ok),
                "block" => self.block(pos).map(Ok),
                "break" | "continue" => {
                    if self.range_depth == 0 {
                        return self.fail(pos, format!("{{{{{k}}}}} outside {{{{range}}}}"));
                    }
                    self.close(k)?;
                    Ok(Ok(if k == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    }))
                }
                "define" => self.fail(pos, "unexpected <define> in command"),
                _ => self.fail(pos, format!("unexpected keyword {k}")),
            };
        }
        let pipe = self.pipeline("command", false)?;
        Ok(Ok(Node::Action(pipe)))
    }

    fn enter(&mut self, pos: usize) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(pos, "max expression depth exceeded");
        }
        Ok(())
    }

    /// `if`, `range` or `with`: pipeline, body, optional else, end.
    fn branch(&mut self, kind: &'static str, pos: usize) -> Result<Node> {
        self.enter(pos)?;
        let scope = self.vars.len();
        let pipe = self.pipeline(kind, kind == "range")?;
        if kind == "range" {
            self.range_depth += 1;
        }
        let (list, end) = self.list(kind)?;
        if kind == "range" {
            self.range_depth -= 1;
        }
        let else_list = match end {
            End::End => None,
            End::Else(None) => {
                let (else_list, end) = self.list("else")?;
                if !matches!(end, End::End) {
                    return self.fail(pos, "expected end; found {{else}}");
                }
                Some(else_list)
            }
            End::Else(Some((chained, chained_pos))) => {
                if chained != kind {
                    return self.fail(chained_pos, format!("unexpected <{chained}> in {kind}"));
                }
                self.take_non_space(); // the chained keyword
                                       // The chained branch ends with this branch's single {{end}}.
                Some(vec![self.branch(chained, chained_pos)?])
            }
        };
        self.vars.truncate(scope);
        self.depth -= 1;
        let b = Branch {
            pipe,
            list,
            else_list,
        };
        Ok(match kind {
            "if" => Node::If(b),
            "range" => Node::Range(b),
            _ => Node::With(b),
        })
    }

    fn template_name(&mut self, context: &str) -> Result<String> {
        let t = self.take_non_space();
        match t.tok {
            Tok::Str(_, name) => Ok(name),
            Tok::Error(_) => self.lex_error(&t),
            other => self.fail(
                t.pos,
                format!("unexpected {} in {context} clause", describe(&other)),
            ),
        }
    }

    /// `{{template "name" [pipeline]}}`.
    fn template_call(&mut self, pos: usize) -> Result<Node> {
        let name = self.template_name("template")?;
        let pipe = if self.peek_non_space() == Tok::Close {
            self.take();
            None
        } else {
            Some(self.pipeline("template", false)?)
        };
        Ok(Node::Template { pos, name, pipe })
    }

    /// `{{define "name"}}...{{end}}` at the top level.
    fn define(&mut self, pos: usize) -> Result<()> {
        let name = self.template_name("define")?;
        self.close("define clause")?;
        let outer = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let (list, end) = self.list("define")?;
        self.vars = outer;
        if !matches!(end, End::End) {
            return self.fail(pos, "unexpected {{else}} in define");
        }
        self.defined.insert(name, list);
        Ok(())
    }

    /// `{{block "name" pipeline}}...{{end}}`: a define and a template call at once.
    fn block(&mut self, pos: usize) -> Result<Node> {
        let name = self.template_name("block")?;
        let pipe = self.pipeline("block", false)?;
        let outer = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let (list, end) = self.list("block")?;
        self.vars = outer;
        if !matches!(end, End::End) {
            return self.fail(pos, "unexpected {{else}} in block");
        }
        self.defined.insert(name.clone(), list);
        Ok(Node::Template {
            pos,
            name,
            pipe: Some(pipe),
        })
    }

    /// A pipeline up to `}}` (or `)` when inside parentheses: `context` "parenthesized
    /// pipeline").
    fn pipeline(&mut self, context: &str, in_range: bool) -> Result<Pipe> {
        let pos = {
            self.skip_space();
            self.peek().pos
        };
        let mut pipe = Pipe {
            pos,
            decl: Vec::new(),
            is_assign: false,
            cmds: Vec::new(),
        };
        self.declarations(&mut pipe, context, in_range)?;
        let end = if context == "parenthesized pipeline" {
            Tok::RightParen
        } else {
            Tok::Close
        };
        loop {
            let tok = self.peek_non_space();
            if tok == end {
                let t = self.take();
                if pipe.cmds.is_empty() {
                    return self.fail(t.pos, format!("missing value for {context}"));
                }
                break;
            }
            match tok {
                Tok::Eof | Tok::Close | Tok::RightParen => {
                    let t = self.take();
                    return self.fail(
                        t.pos,
                        format!("unexpected {} in {context}", describe(&t.tok)),
                    );
                }
                Tok::Error(_) => {
                    let t = self.take();
                    return self.lex_error(&t);
                }
                _ => {
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
            }
        }
        self.check_pipeline(&pipe)?;
        for v in &pipe.decl {
            if !pipe.is_assign {
                self.vars.push(v.clone());
            }
        }
        Ok(pipe)
    }

    /// `$x :=`, `$x =`, `$i, $e :=` at the start of a pipeline.
    fn declarations(&mut self, pipe: &mut Pipe, context: &str, in_range: bool) -> Result<()> {
        let start = self.next;
        let Tok::Variable(first) = self.peek_non_space() else {
            return Ok(());
        };
        self.take();
        let after = self.peek_non_space();
        match after {
            Tok::Declare | Tok::Assign => {
                self.take();
                pipe.is_assign = after == Tok::Assign;
                if pipe.is_assign && !self.vars.contains(&first) {
                    return self.fail(pipe.pos, format!("undefined variable {first:?}"));
                }
                pipe.decl.push(first);
            }
            Tok::Comma if in_range => {
                self.take();
                let t = self.take_non_space();
                let Tok::Variable(second) = t.tok else {
                    return self.fail(t.pos, "range can only initialize variables");
                };
                let op = self.take_non_space();
                if op.tok != Tok::Declare && op.tok != Tok::Assign {
                    return self.fail(op.pos, "expected := or = after range variables");
                }
                pipe.is_assign = op.tok == Tok::Assign;
                pipe.decl.push(first);
                pipe.decl.push(second);
            }
            Tok::Comma => {
                return self.fail(pipe.pos, format!("too many declarations in {context}"));
            }
            _ => self.next = start, // a plain variable operand
        }
        Ok(())
    }

    /// Go refuses constants after the first stage of a pipeline.
    fn check_pipeline(&self, pipe: &Pipe) -> Result<()> {
        for (i, cmd) in pipe.cmds.iter().enumerate().skip(1) {
            if let Some(
                Arg::Bool(..) | Arg::Dot(_) | Arg::Nil(_) | Arg::Number(..) | Arg::Str(..),
            ) = cmd.args.first()
            {
                return self.fail(
                    cmd.pos,
                    format!("non executable command in pipeline stage {}", i + 1),
                );
            }
        }
        Ok(())
    }

    /// Operands up to `|`, `)` or `}}`.
    fn command(&mut self) -> Result<Command> {
        self.skip_space();
        let pos = self.peek().pos;
        let mut args = Vec::new();
        loop {
            self.skip_space();
            match self.peek().tok {
                Tok::Close | Tok::RightParen => break,
                Tok::Pipe => {
                    let t = self.take();
                    if args.is_empty() {
                        return self.fail(t.pos, "missing command");
                    }
                    break;
                }
                _ => {}
            }
            let arg = self.operand()?;
            args.push(arg);
            match self.peek().tok {
                Tok::Space | Tok::Close | Tok::RightParen | Tok::Pipe => {}
                Tok::Error(_) => {
                    let t = self.take();
                    return self.lex_error(&t);
                }
                ref other => {
                    let t = self.peek().clone();
                    return self.fail(t.pos, format!("unexpected {} in operand", describe(other)));
                }
            }
        }
        if args.is_empty() {
            return self.fail(pos, "empty command");
        }
        Ok(Command { pos, args })
    }

    /// A term and the fields chained onto it (`(index . 0).Name`).
    fn operand(&mut self) -> Result<Arg> {
        let term = self.term()?;
        let mut chain = Vec::new();
        while let Tok::Field(f) = &self.peek().tok {
            chain.push(f.clone());
            self.take();
        }
        if chain.is_empty() {
            return Ok(term);
        }
        Ok(match term {
            Arg::Field(pos, mut idents) => {
                idents.extend(chain);
                Arg::Field(pos, idents)
            }
            Arg::Variable(pos, name, mut idents) => {
                idents.extend(chain);
                Arg::Variable(pos, name, idents)
            }
            Arg::Bool(pos, _) | Arg::Str(pos, _, _) | Arg::Number(pos, _, _) | Arg::Dot(pos) => {
                return self.fail(
                    pos,
                    format!("unexpected . after term {:?}", term.to_string()),
                )
            }
            Arg::Nil(pos) => return self.fail(pos, "nil is not a command"),
            other => Arg::Chain(other.pos(), Box::new(other), chain),
        })
    }

    fn term(&mut self) -> Result<Arg> {
        let t = self.take();
        let pos = t.pos;
        Ok(match t.tok {
            Tok::Ident(name) => {
                if !(self.functions)(&name) {
                    return self.fail(pos, format!("function {name:?} not defined"));
                }
                Arg::Ident(pos, name)
            }
            Tok::Dot => Arg::Dot(pos),
            Tok::Nil => Arg::Nil(pos),
            Tok::Variable(name) => {
                if !self.vars.contains(&name) {
                    return self.fail(pos, format!("undefined variable {name:?}"));
                }
                Arg::Variable(pos, name, Vec::new())
            }
            Tok::Field(f) => Arg::Field(pos, vec![f]),
            Tok::Bool(b) => Arg::Bool(pos, b),
            Tok::Number(text) => {
                let n = parse_number(&text)
                    .ok_or(())
                    .or_else(|_| self.fail(pos, format!("illegal number syntax: {text:?}")))?;
                Arg::Number(pos, text, n)
            }
            Tok::Char(text, c) => Arg::Number(pos, text, Number::Int(c as i64)),
            Tok::Str(text, value) => Arg::Str(pos, text, value),
            Tok::LeftParen => {
                self.enter(pos)?;
                let pipe = self.pipeline("parenthesized pipeline", false)?;
                self.depth -= 1;
                Arg::Pipe(Box::new(pipe))
            }
            Tok::Error(_) => return self.lex_error(&t),
            other => return self.fail(pos, format!("unexpected {} in operand", describe(&other))),
        })
    }
}

/// A number constant's value: an integer when it is one (any base), else a float.
fn parse_number(text: &str) -> Option<Number> {
    let clean = text.replace('_', "");
    let (neg, body) = match clean.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        (!h.contains('.') && !h.contains('p'))
            .then(|| i64::from_str_radix(h, 16).ok())
            .flatten()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else {
        lower.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Some(Number::Int(if neg { -i } else { i }));
    }
    if lower.starts_with("0x") || lower.starts_with("0o") || lower.starts_with("0b") {
        return None;
    }
    let f: f64 = lower.parse().ok()?;
    f.is_finite()
        .then_some(Number::Float(if neg { -f } else { f }))
}

/// How Go's parser names a token in its messages.
fn describe(t: &Tok) -> String {
    match t {
        Tok::Close => "\"}}\"".into(),
        Tok::RightParen => "\")\"".into(),
        Tok::LeftParen => "\"(\"".into(),
        Tok::Pipe => "\"|\"".into(),
        Tok::Eof => "EOF".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Declare => "\":=\"".into(),
        Tok::Assign => "\"=\"".into(),
        Tok::Keyword(k) => format!("<{k}>"),
        Tok::Ident(i) => format!("<{i}>"),
        Tok::Field(f) => format!("<.{f}>"),
        Tok::Variable(v) => format!("<{v}>"),
        Tok::Dot => "<.>".into(),
        Tok::Nil => "<nil>".into(),
        Tok::Bool(b) => format!("<{b}>"),
        Tok::Number(n) => format!("<{n}>"),
        Tok::Str(s, _) | Tok::Char(s, _) => format!("<{s}>"),
        Tok::Text(s) => format!("{s:?}"),
        Tok::Space => "space".into(),
        Tok::Open => "\"{{\"".into(),
        Tok::Error(e) => e.to_string(),
    }
}

// The text of a node, as Go prints it in `executing "" at <...>`.
impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = |f: &mut fmt::Formatter<'_>, idents: &[String]| {
            idents.iter().try_for_each(|i| write!(f, ".{i}"))
        };
        match self {
            Arg::Field(_, idents) => fields(f, idents),
            Arg::Variable(_, name, idents) => {
                f.write_str(name)?;
                fields(f, idents)
            }
            Arg::Chain(_, node, idents) => {
                match node.as_ref() {
                    Arg::Pipe(p) => write!(f, "({p})")?,
                    other => write!(f, "{other}")?,
                }
                fields(f, idents)
            }
            Arg::Ident(_, name) => f.write_str(name),
            Arg::Dot(_) => f.write_str("."),
            Arg::Nil(_) => f.write_str("nil"),
            Arg::Bool(_, b) => write!(f, "{b}"),
            Arg::Number(_, text, _) | Arg::Str(_, text, _) => f.write_str(text),
            Arg::Pipe(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match arg {
                Arg::Pipe(p) => write!(f, "({p})")?,
                other => write!(f, "{other}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            write!(
                f,
                "{} {} ",
                self.decl.join(", "),
                if self.is_assign { "=" } else { ":=" }
            )?;
        }
        for (i, cmd) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{cmd}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str) -> bool {
        matches!(name, "len" | "index" | "printf")
    }

    fn err(text: &str) -> String {
        parse(text, &known).unwrap_err().message
    }

    #[test]
    fn parses_control_structures_and_pipelines() {
        let tree = parse(
            "{{range $i, $e := .A}}{{if eq1}}{{else if $e}}x{{else}}y{{end}}{{end}}",
            &|n| n == "eq1",
        )
        .unwrap();
        let Node::Range(r) = &tree.root[0] else {
            panic!("{tree:?}")
        };
        assert_eq!(r.pipe.decl, ["$i", "$e"]);
        let Node::If(b) = &r.list[0] else {
            panic!("{r:?}")
        };
        assert!(matches!(b.else_list.as_deref(), Some([Node::If(_)])));
        let tree = parse("{{(index .A 0).Name | printf \"%s\"}}", &known).unwrap();
        let Node::Action(p) = &tree.root[0] else {
            panic!()
        };
        assert_eq!(p.to_string(), "(index .A 0).Name | printf \"%s\"");
    }

    #[test]
    fn errors_name_the_problem_as_go_does() {
        assert_eq!(err("{{foo}}"), "function \"foo\" not defined");
        assert_eq!(err("{{$x}}"), "undefined variable \"$x\"");
        assert_eq!(err("{{if .A}}"), "unexpected EOF in if");
        assert_eq!(err("{{end}}"), "unexpected {{end}}");
        assert_eq!(err("{{}}"), "missing value for command");
        assert_eq!(err("{{break}}"), "{{break}} outside {{range}}");
        assert_eq!(
            err("{{.A | 3}}"),
            "non executable command in pipeline stage 2"
        );
        assert_eq!(err("{{.ID"), "unclosed action");
        assert_eq!(parse("a\n{{foo}}", &known).unwrap_err().line, 2);
        let deep = "{{".to_string() + &"(".repeat(500) + "1" + &")".repeat(500) + "}}";
        assert_eq!(err(&deep), "max expression depth exceeded");
    }

    #[test]
    fn fields_a_template_could_read() {
        let reads = |t: &str, f: &str| parse(t, &known).unwrap().could_read(f);
        assert!(reads("{{.Names}} {{.Labels}}", "Labels"));
        assert!(!reads("{{.Names}} {{len .Names}}", "Labels"));
        assert!(reads("{{printf \"%v\" .}}", "Labels"));
        assert!(reads("{{$x := .Names}}{{$x}}", "Labels"));
        assert!(reads(
            "{{if .A}}{{else}}{{(index .B 0).Labels}}{{end}}",
            "Labels"
        ));
    }

    #[test]
    fn numbers_are_typed_as_go_types_them() {
        assert_eq!(parse_number("42"), Some(Number::Int(42)));
        assert_eq!(parse_number("-0x1F"), Some(Number::Int(-31)));
        assert_eq!(parse_number("1_000"), Some(Number::Int(1000)));
        assert_eq!(parse_number("1.5e3"), Some(Number::Float(1500.0)));
        assert_eq!(parse_number("+"), None);
    }
}
