//! The functions a template may call: Go's builtins (`index`, `len`, `slice`, `printf`,
//! `eq`...) and the ones Docker's CLI adds (`json`, `join`, `split`, `lower`, `upper`,
//! `title`, `pad`, `truncate`).

use super::printf::sprintf;
use super::value::{Val, Zero};
use std::cmp::Ordering;

/// Why a call failed, and so how Go words it.
#[derive(Debug)]
pub(super) enum Failure {
    /// Argument `0` has the wrong type: reported at that argument.
    Arg(usize, String),
    /// The wrong number of arguments: reported at the command.
    Count(String),
    /// The function itself failed: `error calling NAME: ...`.
    Call(String),
}

/// A function: its arguments (the previous pipeline stage's value last) to its value.
pub(super) type Func = fn(&[Val]) -> Result<Val, Failure>;

/// Which table of functions an execution uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum FuncSet {
    /// Go's builtins and Docker's functions.
    Docker,
    /// The same, but Docker's functions return their first argument unchanged: a `table`
    /// header is the template run over the column titles, which must stay as they are.
    DockerHeader,
}

/// Every function name (`and` and `or` are evaluated by the executor, which stops at the
/// first argument that decides).
const NAMES: [&str; 27] = [
    "and", "or", "not", "len", "index", "slice", "print", "printf", "println", "eq", "ne", "lt",
    "le", "gt", "ge", "html", "js", "urlquery", "call", "json", "split", "join", "title", "lower",
    "upper", "pad", "truncate",
];

/// Whether `name` is a function (the parser refuses any other).
pub(super) fn exists(name: &str) -> bool {
    NAMES.contains(&name)
}

/// The function called `name` in `set`.
pub(super) fn lookup(name: &str, set: FuncSet) -> Option<Func> {
    if set == FuncSet::DockerHeader
        && matches!(
            name,
            "json" | "split" | "join" | "title" | "lower" | "upper" | "pad" | "truncate"
        )
    {
        return Some(first_unchanged);
    }
    Some(match name {
        "not" => not,
        "len" => len,
        "index" => index,
        "slice" => slice,
        "print" => print,
        "printf" => printf,
        "println" => println,
        "eq" => eq,
        "ne" => ne,
        "lt" => |a| compare(a, "lt", |o| o == Ordering::Less),
        "le" => |a| compare(a, "le", |o| o != Ordering::Greater),
        "gt" => |a| compare(a, "gt", |o| o == Ordering::Greater),
        "ge" => |a| compare(a, "ge", |o| o != Ordering::Less),
        "html" => html,
        "js" => js,
        "urlquery" => urlquery,
        "call" => call,
        "json" => json,
        "split" => split,
        "join" => join,
        "title" => title,
        "lower" => |a| one_string(a, "lower").map(|s| Val::Str(s.to_lowercase())),
        "upper" => |a| one_string(a, "upper").map(|s| Val::Str(s.to_uppercase())),
        "pad" => pad,
        "truncate" => truncate,
        _ => return None,
    })
}

fn count(args: &[Val], name: &str, want: usize) -> Result<(), Failure> {
    if args.len() != want {
        return Err(Failure::Count(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn string_arg(args: &[Val], i: usize) -> Result<&str, Failure> {
    match &args[i] {
        Val::Str(s) => Ok(s),
        Val::NoValue => Err(Failure::Arg(i, "invalid value; expected string".into())),
        other => Err(Failure::Arg(
            i,
            format!(
                "wrong type for value; expected string; got {}",
                other.type_name()
            ),
        )),
    }
}

fn int_arg(args: &[Val], i: usize) -> Result<i64, Failure> {
    match &args[i] {
        Val::Int(n) => Ok(*n),
        Val::Uint(n) => {
            i64::try_from(*n).map_err(|_| Failure::Arg(i, format!("{n} overflows int")))
        }
        Val::NoValue => Err(Failure::Arg(i, "invalid value; expected int".into())),
        other => Err(Failure::Arg(
            i,
            format!(
                "wrong type for value; expected int; got {}",
                other.type_name()
            ),
        )),
    }
}

fn one_string<'a>(args: &'a [Val], name: &str) -> Result<&'a str, Failure> {
    count(args, name, 1)?;
    string_arg(args, 0)
}

/// Docker's header functions: the title as it is.
fn first_unchanged(args: &[Val]) -> Result<Val, Failure> {
    if args.is_empty() {
        return Err(Failure::Count(
            "wrong number of args: want at least 1 got 0".into(),
        ));
    }
    string_arg(args, 0).map(|s| Val::Str(s.to_string()))
}

fn not(args: &[Val]) -> Result<Val, Failure> {
    count(args, "not", 1)?;
    Ok(Val::Bool(!args[0].truth()))
}

fn len(args: &[Val]) -> Result<Val, Failure> {
    count(args, "len", 1)?;
    let n = match &args[0] {
        Val::Str(s) => s.len(),
        Val::List(l) => l.len(),
        Val::Map(m, _) => m.len(),
        Val::NoValue | Val::Nil => return Err(Failure::Call("len of nil pointer".into())),
        other => return Err(Failure::Call(format!("len of type {}", other.type_name()))),
    };
    Ok(Val::Int(n as i64))
}

/// An index into something `len` long, as Go checks it.
fn position(index: &Val, len: usize, what: &str) -> Result<usize, Failure> {
    let i = match index {
        Val::Int(i) => *i,
        Val::Uint(u) => i64::try_from(*u).unwrap_or(i64::MAX),
        Val::Nil | Val::NoValue => {
            return Err(Failure::Call(format!("cannot index {what} with nil")))
        }
        other => {
            return Err(Failure::Call(format!(
                "cannot index {what} with type {}",
                other.type_name()
            )))
        }
    };
    if i < 0 || i as u64 >= len as u64 {
        return Err(Failure::Call(format!("index out of range: {i}")));
    }
    Ok(i as usize)
}

fn index(args: &[Val]) -> Result<Val, Failure> {
    let Some((item, indexes)) = args.split_first() else {
        return Err(Failure::Count(
            "wrong number of args for index: want at least 1 got 0".into(),
        ));
    };
    let mut item = item.clone();
    for key in indexes {
        item = match item {
            Val::NoValue => return Err(Failure::Call("index of untyped nil".into())),
            Val::Nil => return Err(Failure::Call("index of nil pointer".into())),
            Val::List(mut l) => {
                let i = position(key, l.len(), "slice/array")?;
                l.swap_remove(i)
            }
            Val::Str(s) => Val::Int(s.as_bytes()[position(key, s.len(), "slice/array")?] as i64),
            Val::Map(mut m, zero) => match key {
                Val::Str(k) => m.remove(k).unwrap_or(match zero {
                    Zero::EmptyString => Val::Str(String::new()),
                    Zero::NoValue => Val::NoValue,
                }),
                other => {
                    return Err(Failure::Call(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    )))
                }
            },
            other => {
                return Err(Failure::Call(format!(
                    "can't index item of type {}",
                    other.type_name()
                )))
            }
        };
    }
    Ok(item)
}

fn slice(args: &[Val]) -> Result<Val, Failure> {
    let Some((item, indexes)) = args.split_first() else {
        return Err(Failure::Count(
            "wrong number of args for slice: want at least 1 got 0".into(),
        ));
    };
    if indexes.len() > 3 {
        return Err(Failure::Call(format!(
            "too many slice indexes: {}",
            indexes.len()
        )));
    }
    let len = match item {
        Val::Str(s) => {
            if indexes.len() == 3 {
                return Err(Failure::Call("cannot 3-index slice a string".into()));
            }
            s.len()
        }
        Val::List(l) => l.len(),
        Val::NoValue => return Err(Failure::Call("slice of untyped nil".into())),
        other => {
            return Err(Failure::Call(format!(
                "can't slice item of type {}",
                other.type_name()
            )))
        }
    };
    let mut bounds = [0, len, len];
    for (slot, v) in bounds.iter_mut().zip(indexes) {
        // Bounds may equal the length, unlike an index.
        *slot = position(v, len + 1, "slice/array")?;
    }
    if bounds[0] > bounds[1] {
        return Err(Failure::Call(format!(
            "invalid slice index: {} > {}",
            bounds[0], bounds[1]
        )));
    }
    if indexes.len() == 3 && bounds[1] > bounds[2] {
        return Err(Failure::Call(format!(
            "invalid slice index: {} > {}",
            bounds[1], bounds[2]
        )));
    }
    Ok(match item {
        Val::Str(s) => match s.get(bounds[0]..bounds[1]) {
            Some(part) => Val::Str(part.to_string()),
            // Go slices bytes; a cut inside a character keeps what is whole.
            None => {
                Val::Str(String::from_utf8_lossy(&s.as_bytes()[bounds[0]..bounds[1]]).into_owned())
            }
        },
        Val::List(l) => Val::List(l[bounds[0]..bounds[1]].to_vec()),
        _ => Val::NoValue,
    })
}

/// A value as fmt's functions print it: a missing value is nil to them.
fn fmt_arg(v: &Val) -> String {
    match v {
        Val::NoValue => "<nil>".into(),
        other => other.print(),
    }
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
pub(super) fn sprint(args: &[Val]) -> String {
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        let is_str = matches!(v, Val::Str(_));
        if i > 0 && !is_str && !matches!(args[i - 1], Val::Str(_)) {
            out.push(' ');
        }
        out.push_str(&fmt_arg(v));
    }
    out
}

fn print(args: &[Val]) -> Result<Val, Failure> {
    Ok(Val::Str(sprint(args)))
}

fn println(args: &[Val]) -> Result<Val, Failure> {
    let parts: Vec<String> = args.iter().map(fmt_arg).collect();
    Ok(Val::Str(parts.join(" ") + "\n"))
}

fn printf(args: &[Val]) -> Result<Val, Failure> {
    if args.is_empty() {
        return Err(Failure::Count(
            "wrong number of args for printf: want at least 1 got 0".into(),
        ));
    }
    let format = string_arg(args, 0)?;
    Ok(Val::Str(sprintf(format, &args[1..])))
}

/// Go's kinds for comparison: integers of either sign compare; other kinds only with
/// their own.
fn equal(a: &Val, b: &Val) -> Result<bool, Failure> {
    let incompatible = || Failure::Call("incompatible types for comparison".into());
    Ok(match (a, b) {
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Uint(x), Val::Uint(y)) => x == y,
        (Val::Int(x), Val::Uint(y)) | (Val::Uint(y), Val::Int(x)) => *x >= 0 && *x as u64 == *y,
        (Val::Float(x), Val::Float(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::NoValue, _) | (_, Val::NoValue) => false,
        (Val::Nil, Val::Nil) => true,
        (Val::Nil, Val::List(_) | Val::Map(..)) | (Val::List(_) | Val::Map(..), Val::Nil) => false,
        (Val::List(_) | Val::Map(..) | Val::Struct(_), _) => {
            return Err(Failure::Call(format!(
                "non-comparable type {}: {}",
                a.print(),
                a.type_name()
            )))
        }
        _ => return Err(incompatible()),
    })
}

fn eq(args: &[Val]) -> Result<Val, Failure> {
    let Some((first, rest)) = args.split_first().filter(|(_, r)| !r.is_empty()) else {
        return Err(Failure::Call("missing argument for comparison".into()));
    };
    for other in rest {
        if equal(first, other)? {
            return Ok(Val::Bool(true));
        }
    }
    Ok(Val::Bool(false))
}

fn ne(args: &[Val]) -> Result<Val, Failure> {
    count(args, "ne", 2)?;
    Ok(Val::Bool(!equal(&args[0], &args[1])?))
}

fn order(a: &Val, b: &Val) -> Result<Ordering, Failure> {
    let invalid = || Failure::Call("invalid type for comparison".into());
    Ok(match (a, b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        (Val::Uint(x), Val::Uint(y)) => x.cmp(y),
        (Val::Int(x), Val::Uint(y)) => {
            if *x < 0 {
                Ordering::Less
            } else {
                (*x as u64).cmp(y)
            }
        }
        (Val::Uint(x), Val::Int(y)) => {
            if *y < 0 {
                Ordering::Greater
            } else {
                x.cmp(&(*y as u64))
            }
        }
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(y).ok_or_else(invalid)?,
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (
            Val::Int(_) | Val::Uint(_) | Val::Float(_) | Val::Str(_),
            Val::Int(_) | Val::Uint(_) | Val::Float(_) | Val::Str(_),
        ) => return Err(Failure::Call("incompatible types for comparison".into())),
        _ => return Err(invalid()),
    })
}

fn compare(args: &[Val], name: &str, accept: fn(Ordering) -> bool) -> Result<Val, Failure> {
    count(args, name, 2)?;
    Ok(Val::Bool(accept(order(&args[0], &args[1])?)))
}

fn html(args: &[Val]) -> Result<Val, Failure> {
    let text = sprint(args);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Ok(Val::Str(out))
}

fn js(args: &[Val]) -> Result<Val, Failure> {
    let text = sprint(args);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 || c.is_control() => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    Ok(Val::Str(out))
}

fn urlquery(args: &[Val]) -> Result<Val, Failure> {
    let text = sprint(args);
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    Ok(Val::Str(out))
}

/// `call` runs a function value; JSON data holds none.
fn call(args: &[Val]) -> Result<Val, Failure> {
    match args.first() {
        None => Err(Failure::Count(
            "wrong number of args for call: want at least 1 got 0".into(),
        )),
        Some(Val::NoValue | Val::Nil) => Err(Failure::Call("call of nil".into())),
        Some(other) => Err(Failure::Call(format!(
            "non-function of type {}",
            other.type_name()
        ))),
    }
}

/// Docker's `json`: the value encoded as JSON, HTML characters left as they are.
fn json(args: &[Val]) -> Result<Val, Failure> {
    count(args, "json", 1)?;
    let text =
        serde_json::to_string(&args[0].to_json()).map_err(|e| Failure::Call(e.to_string()))?;
    // Go's encoder also escapes the two JavaScript line terminators.
    Ok(Val::Str(
        text.replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029"),
    ))
}

fn split(args: &[Val]) -> Result<Val, Failure> {
    count(args, "split", 2)?;
    let (s, sep) = (string_arg(args, 0)?, string_arg(args, 1)?);
    let parts: Vec<Val> = if sep.is_empty() {
        s.chars().map(|c| Val::Str(c.to_string())).collect()
    } else {
        s.split(sep).map(|p| Val::Str(p.to_string())).collect()
    };
    Ok(Val::List(parts))
}

fn join(args: &[Val]) -> Result<Val, Failure> {
    count(args, "join", 2)?;
    let sep = string_arg(args, 1)?;
    let wrong = |got: String| {
        Failure::Arg(
            0,
            format!("wrong type for value; expected []string; got {got}"),
        )
    };
    let Val::List(items) = &args[0] else {
        return Err(wrong(args[0].type_name()));
    };
    let parts = items
        .iter()
        .map(|v| match v {
            Val::Str(s) => Ok(s.as_str()),
            _ => Err(wrong(args[0].type_name())),
        })
        .collect::<Result<Vec<&str>, Failure>>()?;
    Ok(Val::Str(parts.join(sep)))
}

/// Go's `strings.Title`: the first letter of each word upper-cased.
fn title(args: &[Val]) -> Result<Val, Failure> {
    let s = one_string(args, "title")?;
    let separator = |c: char| {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            c.is_whitespace()
        }
    };
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        if separator(prev) {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    Ok(Val::Str(out))
}

fn pad(args: &[Val]) -> Result<Val, Failure> {
    count(args, "pad", 3)?;
    let s = string_arg(args, 0)?;
    let (before, after) = (int_arg(args, 1)?, int_arg(args, 2)?);
    if s.is_empty() {
        return Ok(Val::Str(String::new()));
    }
    // Go would try to allocate any count; a million spaces is past any column.
    let spaces = |n: i64| match usize::try_from(n) {
        Err(_) => Err(Failure::Call("strings: negative Repeat count".into())),
        Ok(n) if n > 1_000_000 => Err(Failure::Call(format!("pad of {n} spaces is too wide"))),
        Ok(n) => Ok(" ".repeat(n)),
    };
    Ok(Val::Str(spaces(before)? + s + &spaces(after)?))
}

fn truncate(args: &[Val]) -> Result<Val, Failure> {
    count(args, "truncate", 2)?;
    let s = string_arg(args, 0)?;
    let n = int_arg(args, 1)?;
    if n < 0 {
        return Err(Failure::Call(format!(
            "runtime error: slice bounds out of range [:{n}]"
        )));
    }
    let n = n as usize;
    if s.len() < n {
        return Ok(Val::Str(s.to_string()));
    }
    // Go cuts bytes; a character cut in two is left out whole.
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Ok(Val::Str(s[..end].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val {
        Val::Str(text.into())
    }

    fn run(name: &str, args: &[Val]) -> Result<Val, Failure> {
        lookup(name, FuncSet::Docker).unwrap()(args)
    }

    fn ok(name: &str, args: &[Val]) -> Val {
        run(name, args).unwrap()
    }

    fn call_error(name: &str, args: &[Val]) -> String {
        match run(name, args) {
            Err(Failure::Call(m)) | Err(Failure::Count(m)) | Err(Failure::Arg(_, m)) => m,
            Ok(v) => panic!("{name}: {v:?}"),
        }
    }

    #[test]
    fn dockers_string_functions() {
        assert_eq!(ok("upper", &[s("abc")]), s("ABC"));
        assert_eq!(ok("lower", &[s("AbC")]), s("abc"));
        assert_eq!(ok("title", &[s("hello wide-world")]), s("Hello Wide-World"));
        assert_eq!(
            ok("split", &[s("a,b"), s(",")]),
            Val::List(vec![s("a"), s("b")])
        );
        assert_eq!(
            ok("join", &[Val::List(vec![s("a"), s("b")]), s("+")]),
            s("a+b")
        );
        assert_eq!(ok("pad", &[s("x"), Val::Int(2), Val::Int(1)]), s("  x "));
        assert_eq!(ok("pad", &[s(""), Val::Int(2), Val::Int(1)]), s(""));
        assert_eq!(ok("truncate", &[s("abcdef"), Val::Int(3)]), s("abc"));
        assert_eq!(ok("truncate", &[s("ab"), Val::Int(3)]), s("ab"));
        assert_eq!(ok("truncate", &[s("éa"), Val::Int(1)]), s(""));
        assert_eq!(
            ok("json", &[Val::List(vec![s("<a>"), Val::Int(1), Val::Nil])]),
            s(r#"["<a>",1,null]"#)
        );
        assert_eq!(ok("json", &[Val::NoValue]), s("null"));
        assert_eq!(
            call_error("join", &[Val::List(vec![Val::Int(1)]), s(",")]),
            "wrong type for value; expected []string; got []interface {}"
        );
        assert_eq!(
            call_error("upper", &[Val::Int(1)]),
            "wrong type for value; expected string; got int"
        );
        assert!(call_error("truncate", &[s("a"), Val::Int(-1)]).contains("out of range"));
    }

    #[test]
    fn gos_builtins() {
        let list = Val::List(vec![s("a"), s("b"), s("c")]);
        assert_eq!(ok("index", &[list.clone(), Val::Int(1)]), s("b"));
        assert_eq!(
            call_error("index", &[list.clone(), Val::Int(3)]),
            "index out of range: 3"
        );
        let labels = Val::Map([("k".to_string(), s("v"))].into(), Zero::EmptyString);
        assert_eq!(ok("index", &[labels.clone(), s("k")]), s("v"));
        assert_eq!(ok("index", &[labels.clone(), s("nope")]), s(""));
        assert_eq!(ok("len", &[labels]), Val::Int(1));
        assert_eq!(ok("len", &[s("héllo")]), Val::Int(6));
        assert_eq!(call_error("len", &[Val::Int(3)]), "len of type int");
        assert_eq!(
            ok("slice", &[list.clone(), Val::Int(1), Val::Int(3)]),
            Val::List(vec![s("b"), s("c")])
        );
        assert_eq!(
            ok("slice", &[s("hello"), Val::Int(1), Val::Int(3)]),
            s("el")
        );
        assert_eq!(
            call_error("slice", &[s("hello"), Val::Int(3), Val::Int(1)]),
            "invalid slice index: 3 > 1"
        );
        assert_eq!(
            ok("print", &[s("a"), Val::Int(1), Val::Int(2), s("b")]),
            s("a1 2b")
        );
        assert_eq!(ok("println", &[s("a"), Val::Int(1)]), s("a 1\n"));
        assert_eq!(ok("printf", &[s("%s=%d"), s("x"), Val::Int(3)]), s("x=3"));
        assert_eq!(ok("not", &[s("")]), Val::Bool(true));
        assert_eq!(
            ok("eq", &[Val::Int(1), Val::Int(2), Val::Int(1)]),
            Val::Bool(true)
        );
        assert_eq!(ok("eq", &[Val::Int(1), Val::Uint(1)]), Val::Bool(true));
        assert_eq!(ok("ne", &[s("a"), s("b")]), Val::Bool(true));
        assert_eq!(ok("lt", &[Val::Int(1), Val::Int(2)]), Val::Bool(true));
        assert_eq!(ok("ge", &[s("b"), s("a")]), Val::Bool(true));
        assert_eq!(
            ok("le", &[Val::Float(1.5), Val::Float(1.5)]),
            Val::Bool(true)
        );
        assert_eq!(ok("gt", &[Val::Int(-1), Val::Uint(1)]), Val::Bool(false));
        assert_eq!(
            call_error("eq", &[Val::Int(1), s("1")]),
            "incompatible types for comparison"
        );
        assert_eq!(
            call_error("lt", &[Val::Bool(true), Val::Bool(false)]),
            "invalid type for comparison"
        );
        assert_eq!(
            ok("html", &[s("<a href='x'>")]),
            s("&lt;a href=&#39;x&#39;&gt;")
        );
        assert_eq!(ok("js", &[s("a'b<")]), s("a\\'b\\u003C"));
        assert_eq!(ok("urlquery", &[s("a b&c")]), s("a+b%26c"));
        assert_eq!(call_error("call", &[s("f")]), "non-function of type string");
    }

    #[test]
    fn header_functions_keep_titles() {
        let upper = lookup("upper", FuncSet::DockerHeader).unwrap();
        assert_eq!(upper(&[s("NAMES")]).unwrap(), s("NAMES"));
        let truncate = lookup("truncate", FuncSet::DockerHeader).unwrap();
        assert_eq!(
            truncate(&[s("CONTAINER ID"), Val::Int(3)]).unwrap(),
            s("CONTAINER ID")
        );
        assert!(exists("printf") && !exists("foo"));
    }
}
