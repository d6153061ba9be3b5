//! `printf`: Go's `fmt.Sprintf` over template values (verbs `v s q d b o x X c U e E f F
//! g G t T %`, flags `- + # 0 space`, width and precision, `*` for either), with Go's
//! in-line complaints (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA int=1)`).

use super::value::{format_float_g, Val};

/// The widest width or precision Go's fmt accepts.
const MAX_WIDTH: usize = 1_000_000;

/// One directive's flags, width and precision.
#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// `format` with `args` substituted.
pub(super) fn sprintf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut next_arg = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars>, next_arg: &mut usize| {
            if chars.peek() == Some(&'*') {
                chars.next();
                let n = match args.get(*next_arg) {
                    Some(Val::Int(n)) if *n >= 0 => Some(*n as usize),
                    _ => None,
                };
                *next_arg += 1;
                return n;
            }
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            digits.parse().ok()
        };
        spec.width = number(&mut chars, &mut next_arg);
        if spec.width.is_some_and(|w| w > MAX_WIDTH) {
            out.push_str("%!(BADWIDTH)");
            spec.width = None;
        }
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(number(&mut chars, &mut next_arg).unwrap_or(0));
            if spec.precision.is_some_and(|p| p > MAX_WIDTH) {
                out.push_str("%!(BADPREC)");
                spec.precision = None;
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(next_arg) {
            None => out.push_str(&format!("%!{verb}(MISSING)")),
            Some(arg) => out.push_str(&directive(verb, &spec, arg)),
        }
        next_arg += 1;
    }
    if next_arg < args.len() {
        let extra: Vec<String> = args[next_arg..]
            .iter()
            .map(|a| match a {
                Val::Nil | Val::NoValue => "<nil>".to_string(),
                a => format!("{}={}", a.type_name(), a.print()),
            })
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

/// Go's complaint about a verb that does not fit its operand.
fn bad_verb(verb: char, arg: &Val) -> String {
    match arg {
        Val::Nil | Val::NoValue => format!("%!{verb}(<nil>)"),
        a => format!("%!{verb}({}={})", a.type_name(), a.print()),
    }
}

fn directive(verb: char, spec: &Spec, arg: &Val) -> String {
    let text = match (verb, arg) {
        ('T', a) => return pad(spec, a.type_name(), false),
        ('v', Val::Str(s)) if spec.sharp => quote(s),
        ('v', Val::NoValue) => "<nil>".into(),
        ('v', Val::Int(_) | Val::Uint(_)) => return integer(spec, arg, 10, false),
        ('v', Val::Float(f)) => return float(spec, *f, 'g'),
        ('v', a) => a.print(),
        ('s', Val::Str(s)) => truncated(s, spec.precision),
        ('s', Val::List(items)) if items.iter().all(|i| matches!(i, Val::Str(_))) => arg.print(),
        ('q', Val::Str(s))
            if spec.sharp && !s.contains('`') && !s.chars().any(char::is_control) =>
        {
            format!("`{s}`")
        }
        ('q', Val::Str(s)) => quote(s),
        ('q', Val::Int(i)) => char::from_u32(*i as u32).map_or_else(
            || "'\u{FFFD}'".into(),
            |c| format!("'{}'", c.escape_default()),
        ),
        ('d', Val::Int(_) | Val::Uint(_)) => return integer(spec, arg, 10, false),
        ('b', Val::Int(_) | Val::Uint(_)) => return integer(spec, arg, 2, false),
        ('o', Val::Int(_) | Val::Uint(_)) => return integer(spec, arg, 8, false),
        ('x', Val::Int(_) | Val::Uint(_)) => return integer(spec, arg, 16, false),
        ('X', Val::Int(_) | Val::Uint(_)) => return integer(spec, arg, 16, true),
        ('x', Val::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Val::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
        ('c', Val::Int(i)) => char::from_u32(*i as u32).unwrap_or('\u{FFFD}').to_string(),
        ('U', Val::Int(i)) => format!("U+{:04X}", i),
        ('t', Val::Bool(b)) => b.to_string(),
        ('e' | 'E' | 'f' | 'F' | 'g' | 'G', Val::Float(f)) => return float(spec, *f, verb),
        (verb, a) => bad_verb(verb, a),
    };
    pad(spec, text, false)
}

fn truncated(s: &str, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

/// A string as Go's `%q` (strconv.Quote) writes it.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` padded to the width: on the right with `-`, with zeros after the sign when
/// `numeric` and `0` is given, else with spaces on the left.
fn pad(spec: &Spec, text: String, numeric: bool) -> String {
    let width = spec.width.unwrap_or(0);
    let len = text.chars().count();
    if len >= width {
        return text;
    }
    let fill = width - len;
    if spec.minus {
        text + &" ".repeat(fill)
    } else if spec.zero && numeric {
        let sign_len = usize::from(text.starts_with(['-', '+', ' ']));
        format!(
            "{}{}{}",
            &text[..sign_len],
            "0".repeat(fill),
            &text[sign_len..]
        )
    } else {
        " ".repeat(fill) + &text
    }
}

fn sign(spec: &Spec, negative: bool) -> &'static str {
    if negative {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    }
}

fn integer(spec: &Spec, arg: &Val, base: u32, upper: bool) -> String {
    let (negative, magnitude) = match arg {
        Val::Int(i) => (*i < 0, i.unsigned_abs()),
        Val::Uint(u) => (false, *u),
        _ => return bad_verb('d', arg),
    };
    let mut digits = match base {
        2 => format!("{magnitude:b}"),
        8 => format!("{magnitude:o}"),
        16 if upper => format!("{magnitude:X}"),
        16 => format!("{magnitude:x}"),
        _ => magnitude.to_string(),
    };
    if let Some(p) = spec.precision {
        if digits.len() < p {
            digits = "0".repeat(p - digits.len()) + &digits;
        }
    }
    let prefix = match (spec.sharp, base) {
        (true, 16) if upper => "0X",
        (true, 16) => "0x",
        (true, 8) if !digits.starts_with('0') => "0",
        (true, 2) => "0b",
        _ => "",
    };
    pad(
        spec,
        format!("{}{prefix}{digits}", sign(spec, negative)),
        spec.precision.is_none(),
    )
}

fn float(spec: &Spec, f: f64, verb: char) -> String {
    let body = match verb {
        'e' | 'E' => {
            let p = spec.precision.unwrap_or(6);
            let s = format!("{:.*e}", p, f.abs());
            // Rust writes `1.5e3`; Go writes `1.5e+03`.
            let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
            let e: i32 = e.parse().unwrap_or(0);
            let s = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
            if verb == 'E' {
                s.to_uppercase()
            } else {
                s
            }
        }
        'f' | 'F' => format!("{:.*}", spec.precision.unwrap_or(6), f.abs()),
        _ => {
            let s = format_float_g(f.abs(), spec.precision);
            if verb == 'G' {
                s.to_uppercase()
            } else {
                s
            }
        }
    };
    let body = if f.is_nan() { "NaN".to_string() } else { body };
    pad(
        spec,
        format!("{}{body}", sign(spec, f.is_sign_negative() && !f.is_nan())),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val {
        Val::Str(text.into())
    }

    #[test]
    fn verbs_flags_and_widths() {
        assert_eq!(
            sprintf("%s|%5s|%-5s|%.2s", &[s("a"), s("b"), s("c"), s("xyz")]),
            "a|    b|c    |xy"
        );
        assert_eq!(
            sprintf(
                "%d %05d %+d %x %X %#x %o %b",
                &[
                    Val::Int(7),
                    Val::Int(-42),
                    Val::Int(3),
                    Val::Int(255),
                    Val::Int(255),
                    Val::Int(255),
                    Val::Int(8),
                    Val::Int(5)
                ]
            ),
            "7 -0042 +3 ff FF 0xff 10 101"
        );
        assert_eq!(
            sprintf(
                "%.2f %e %g %v",
                &[
                    Val::Float(4.56789),
                    Val::Float(1500.0),
                    Val::Float(0.5),
                    Val::Float(2.0)
                ]
            ),
            "4.57 1.500000e+03 0.5 2"
        );
        assert_eq!(
            sprintf(
                "%q %v %t %c %T",
                &[
                    s("a\"b\n"),
                    Val::List(vec![s("x"), Val::Int(1)]),
                    Val::Bool(true),
                    Val::Int(65),
                    Val::Float(1.0)
                ]
            ),
            "\"a\\\"b\\n\" [x 1] true A float64"
        );
        assert_eq!(sprintf("%*d|%%", &[Val::Int(4), Val::Int(7)]), "   7|%");
        assert_eq!(sprintf("%x", &[s("hi")]), "6869");
    }

    #[test]
    fn complaints_are_gos() {
        assert_eq!(sprintf("%d", &[s("x")]), "%!d(string=x)");
        assert_eq!(sprintf("%s %s", &[s("x")]), "x %!s(MISSING)");
        assert_eq!(sprintf("%s", &[s("x"), Val::Int(1)]), "x%!(EXTRA int=1)");
        assert_eq!(sprintf("%", &[]), "%!(NOVERB)");
        assert_eq!(sprintf("%s", &[Val::Int(3)]), "%!s(int=3)");
        assert_eq!(sprintf("%99999999999d", &[Val::Int(3)]), "%!(BADWIDTH)3");
    }
}
