//! The evaluator: walks a parsed template over a value, as Go's text/template executes
//! (variables and their scopes, `range` over lists, maps and integers, `break`/`continue`,
//! `and`/`or` that stop at their answer, defined templates).

use super::funcs::{self, Failure, FuncSet};
use super::parse::{Arg, Branch, Command, List, Node, Number, Pipe, Tree};
use super::value::{Shape, Val, Zero};

/// How deep `{{template}}` calls may nest (Go allows 100000; a recursive template here
/// stops long before the thread's stack does).
pub(super) const MAX_TEMPLATE_DEPTH: usize = 100;

/// An execution error: where, in which node, and Go's message.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ExecFailure {
    /// The defined template it happened in ("" for the main one).
    pub template: String,
    pub pos: usize,
    /// The node's text, as Go shows it in `at <...>`.
    pub context: String,
    pub message: String,
}

/// What a list's walk ended with.
enum Flow {
    Normal,
    Break,
    Continue,
}

type Result<T> = std::result::Result<T, ExecFailure>;

/// One execution: the output so far, the variables in scope, the template being run.
pub(super) struct Exec<'t> {
    tree: &'t Tree,
    funcs: FuncSet,
    shape: Option<&'t Shape>,
    pub out: String,
    vars: Vec<(String, Val)>,
    template: String,
    depth: usize,
}

impl<'t> Exec<'t> {
    /// An execution of `tree` with the functions of `funcs`, over data typed by `shape`.
    pub fn new(tree: &'t Tree, funcs: FuncSet, shape: Option<&'t Shape>) -> Exec<'t> {
        Exec {
            tree,
            funcs,
            shape,
            out: String::new(),
            vars: Vec::new(),
            template: String::new(),
            depth: 0,
        }
    }

    /// Runs the main template over `dot`.
    pub fn run(&mut self, dot: &Val) -> Result<()> {
        self.vars = vec![("$".to_string(), dot.clone())];
        self.walk(&self.tree.root, dot).map(|_| ())
    }

    fn fail<T>(&self, pos: usize, context: impl ToString, message: impl Into<String>) -> Result<T> {
        Err(ExecFailure {
            template: self.template.clone(),
            pos,
            context: context.to_string(),
            message: message.into(),
        })
    }

    fn walk(&mut self, list: &List, dot: &Val) -> Result<Flow> {
        for node in list {
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        self.out.push_str(&v.print());
                    }
                }
                Node::If(b) => match self.if_or_with(b, dot, false)? {
                    Flow::Normal => {}
                    flow => return Ok(flow),
                },
                Node::With(b) => match self.if_or_with(b, dot, true)? {
                    Flow::Normal => {}
                    flow => return Ok(flow),
                },
                Node::Range(b) => self.range(b, dot)?,
                Node::Template { pos, name, pipe } => self.call_template(*pos, name, pipe, dot)?,
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn if_or_with(&mut self, b: &Branch, dot: &Val, with: bool) -> Result<Flow> {
        let mark = self.vars.len();
        let v = self.pipeline(dot, &b.pipe)?;
        let flow = if v.truth() {
            let inner = if with { v } else { dot.clone() };
            self.walk(&b.list, &inner)?
        } else if let Some(else_list) = &b.else_list {
            self.walk(else_list, dot)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn range(&mut self, b: &Branch, dot: &Val) -> Result<()> {
        let mark = self.vars.len();
        let v = self.commands(dot, &b.pipe)?;
        let items: Vec<(Val, Val)> = match v {
            Val::List(l) => l
                .into_iter()
                .enumerate()
                .map(|(i, e)| (Val::Int(i as i64), e))
                .collect(),
            Val::Map(m, _) => m.into_iter().map(|(k, e)| (Val::Str(k), e)).collect(),
            Val::Int(n) => (0..n.max(0)).map(|i| (Val::Int(i), Val::Int(i))).collect(),
            Val::NoValue | Val::Nil => Vec::new(),
            other => {
                return self.fail(
                    b.pipe.pos,
                    format!("{{{{range {}}}}}", b.pipe),
                    format!("range can't iterate over {}", other.print()),
                )
            }
        };
        if items.is_empty() {
            if let Some(else_list) = &b.else_list {
                self.walk(else_list, dot)?;
            }
            self.vars.truncate(mark);
            return Ok(());
        }
        for (index, elem) in items {
            // One variable is the element; two are the index (or key) and the element.
            let values = match b.pipe.decl.len() {
                0 => vec![],
                1 => vec![elem.clone()],
                _ => vec![index, elem.clone()],
            };
            for (name, value) in b.pipe.decl.iter().zip(values) {
                if b.pipe.is_assign {
                    self.assign(name, value);
                } else {
                    self.vars.push((name.clone(), value));
                }
            }
            let flow = self.walk(&b.list, &elem)?;
            self.vars.truncate(mark);
            if let Flow::Break = flow {
                break;
            }
        }
        Ok(())
    }

    fn call_template(
        &mut self,
        pos: usize,
        name: &str,
        pipe: &Option<Pipe>,
        dot: &Val,
    ) -> Result<()> {
        let Some(list) = self.tree.defined.get(name) else {
            return self.fail(
                pos,
                format!("template {name:?}"),
                format!("template {name:?} not defined"),
            );
        };
        if self.depth >= MAX_TEMPLATE_DEPTH {
            return self.fail(
                pos,
                format!("template {name:?}"),
                format!("exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})"),
            );
        }
        let new_dot = match pipe {
            Some(p) => self.pipeline(dot, p)?,
            None => Val::Nil,
        };
        let vars = std::mem::replace(&mut self.vars, vec![("$".to_string(), new_dot.clone())]);
        let outer = std::mem::replace(&mut self.template, name.to_string());
        self.depth += 1;
        let result = self.walk(list, &new_dot);
        self.depth -= 1;
        self.template = outer;
        self.vars = vars;
        result.map(|_| ())
    }

    fn assign(&mut self, name: &str, value: Val) {
        if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = value;
        }
    }

    /// A pipeline's value, declaring or assigning its variables.
    fn pipeline(&mut self, dot: &Val, pipe: &Pipe) -> Result<Val> {
        let v = self.commands(dot, pipe)?;
        for name in &pipe.decl {
            if pipe.is_assign {
                self.assign(name, v.clone());
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    /// The commands of a pipeline, each one's value the last argument of the next.
    fn commands(&mut self, dot: &Val, pipe: &Pipe) -> Result<Val> {
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.command(dot, cmd, value)?);
        }
        Ok(value.unwrap_or(Val::NoValue))
    }

    fn command(&mut self, dot: &Val, cmd: &Command, last: Option<Val>) -> Result<Val> {
        let first = &cmd.args[0];
        match first {
            Arg::Field(pos, idents) => {
                return self.fields(*pos, first, dot.clone(), idents, cmd, last)
            }
            Arg::Variable(pos, name, idents) => {
                let v = self.variable(*pos, name)?;
                if idents.is_empty() {
                    self.not_a_function(cmd, &last)?;
                    return Ok(v);
                }
                return self.fields(*pos, first, v, idents, cmd, last);
            }
            Arg::Chain(pos, node, idents) => {
                let v = self.arg(dot, node)?;
                return self.fields(*pos, first, v, idents, cmd, last);
            }
            Arg::Ident(pos, name) => return self.call(dot, *pos, name, cmd, last),
            Arg::Pipe(p) => {
                self.not_a_function(cmd, &last)?;
                return self.pipeline(dot, p);
            }
            _ => {}
        }
        self.not_a_function(cmd, &last)?;
        match first {
            Arg::Dot(_) => Ok(dot.clone()),
            Arg::Nil(pos) => self.fail(*pos, "nil", "nil is not a command"),
            other => Ok(constant(other)),
        }
    }

    fn not_a_function(&self, cmd: &Command, last: &Option<Val>) -> Result<()> {
        if cmd.args.len() > 1 || last.is_some() {
            let first = &cmd.args[0];
            return self.fail(
                first.pos(),
                first,
                format!("can't give argument to non-function {first}"),
            );
        }
        Ok(())
    }

    fn variable(&self, pos: usize, name: &str) -> Result<Val> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => self.fail(pos, name, format!("undefined variable: {name}")),
        }
    }

    /// `receiver.A.B...`; only a method could take arguments, and data has none.
    fn fields(
        &mut self,
        pos: usize,
        node: &Arg,
        receiver: Val,
        idents: &[String],
        cmd: &Command,
        last: Option<Val>,
    ) -> Result<Val> {
        let mut v = receiver;
        for (i, name) in idents.iter().enumerate() {
            let final_field = i + 1 == idents.len();
            let has_args = final_field && (cmd.args.len() > 1 || last.is_some());
            v = self.field(pos, node, v, name, has_args)?;
        }
        Ok(v)
    }

    fn field(
        &self,
        pos: usize,
        node: &Arg,
        receiver: Val,
        name: &str,
        has_args: bool,
    ) -> Result<Val> {
        match receiver {
            Val::Struct(mut s) => match s.fields.remove(name) {
                Some(_) if has_args => self.fail(
                    pos,
                    node,
                    format!("{name} has arguments but cannot be invoked as field"),
                ),
                Some(v) => Ok(v),
                // A map field the document leaves out is Go's nil map, as Docker's
                // types always have the field.
                None if self.shape.is_some_and(|sh| sh.string_maps.contains(&name)) => {
                    Ok(Val::Map(Default::default(), Zero::EmptyString))
                }
                None if self.shape.is_some_and(|sh| sh.maps.contains(&name)) => {
                    Ok(Val::Map(Default::default(), Zero::NoValue))
                }
                None => match s.type_name {
                    Some(t) => self.fail(
                        pos,
                        node,
                        format!("can't evaluate field {name} in type {t}"),
                    ),
                    None => self.fail(pos, node, format!("map has no entry for key {name:?}")),
                },
            },
            Val::Map(mut m, _) => {
                if has_args {
                    return self.fail(
                        pos,
                        node,
                        format!("{name} is not a method but has arguments"),
                    );
                }
                Ok(m.remove(name).unwrap_or(Val::NoValue))
            }
            Val::NoValue => Ok(Val::NoValue),
            Val::Nil => self.fail(
                pos,
                node,
                format!("nil pointer evaluating interface {{}}.{name}"),
            ),
            other => self.fail(
                pos,
                node,
                format!("can't evaluate field {name} in type {}", other.type_name()),
            ),
        }
    }

    /// An argument of a function.
    fn arg(&mut self, dot: &Val, arg: &Arg) -> Result<Val> {
        match arg {
            Arg::Dot(_) => Ok(dot.clone()),
            Arg::Nil(_) => Ok(Val::Nil),
            Arg::Field(pos, idents) => {
                let none = Command {
                    pos: *pos,
                    args: vec![arg.clone()],
                };
                self.fields(*pos, arg, dot.clone(), idents, &none, None)
            }
            Arg::Variable(pos, name, idents) => {
                let v = self.variable(*pos, name)?;
                let none = Command {
                    pos: *pos,
                    args: vec![arg.clone()],
                };
                self.fields(*pos, arg, v, idents, &none, None)
            }
            Arg::Chain(pos, node, idents) => {
                let v = self.arg(dot, node)?;
                let none = Command {
                    pos: *pos,
                    args: vec![arg.clone()],
                };
                self.fields(*pos, arg, v, idents, &none, None)
            }
            Arg::Pipe(p) => self.pipeline(dot, p),
            Arg::Ident(pos, name) => {
                let cmd = Command {
                    pos: *pos,
                    args: vec![arg.clone()],
                };
                self.call(dot, *pos, name, &cmd, None)
            }
            other => Ok(constant(other)),
        }
    }

    /// Calls function `name` with the command's arguments (and the previous stage's value
    /// last). `and` and `or` evaluate only what they need.
    fn call(
        &mut self,
        dot: &Val,
        pos: usize,
        name: &str,
        cmd: &Command,
        last: Option<Val>,
    ) -> Result<Val> {
        let arg_nodes = &cmd.args[1..];
        if name == "and" || name == "or" {
            let want = name == "or";
            if arg_nodes.is_empty() && last.is_none() {
                return self.fail(
                    pos,
                    cmd,
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                );
            }
            let mut v = Val::NoValue;
            for node in arg_nodes {
                v = self.arg(dot, node)?;
                if v.truth() == want {
                    return Ok(v);
                }
            }
            return Ok(last.unwrap_or(v));
        }
        let Some(function) = funcs::lookup(name, self.funcs) else {
            return self.fail(pos, name, format!("{name:?} is not a defined function"));
        };
        let mut args = Vec::with_capacity(arg_nodes.len() + 1);
        for node in arg_nodes {
            args.push(self.arg(dot, node)?);
        }
        args.extend(last);
        function(&args).or_else(|failure| match failure {
            Failure::Arg(i, message) => {
                let node = arg_nodes.get(i).unwrap_or(&cmd.args[0]);
                self.fail(node.pos(), node, message)
            }
            Failure::Count(message) => self.fail(cmd.pos, cmd, message),
            Failure::Call(message) => {
                self.fail(cmd.pos, cmd, format!("error calling {name}: {message}"))
            }
        })
    }
}

fn constant(arg: &Arg) -> Val {
    match arg {
        Arg::Bool(_, b) => Val::Bool(*b),
        Arg::Number(_, _, Number::Int(i)) => Val::Int(*i),
        Arg::Number(_, _, Number::Float(f)) => Val::Float(*f),
        Arg::Str(_, _, s) => Val::Str(s.clone()),
        _ => Val::NoValue,
    }
}
