//! Values as a template sees them: JSON, with Go's distinction between a struct (a missing
//! field is an error) and a map (a missing key is `<no value>`), and Go's printing.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// How Go would type a JSON document: which objects are structs and which are maps.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Go's name of the top-level struct's type, for "can't evaluate field X in type T"
    /// (Docker's formatter contexts); None for a document Docker decodes into plain maps
    /// when its typed struct lacks a field (`inspect`), where a missing field is
    /// `map has no entry for key "X"`.
    pub type_name: Option<&'static str>,
    /// The fields whose objects are Go maps of strings (labels, options): a missing key is
    /// `<no value>`, and `index` of it is "".
    pub string_maps: &'static [&'static str],
    /// The fields whose objects are other Go maps (networks, ports): a missing key is
    /// `<no value>`, and so is `index` of it. Every other object is a struct.
    pub maps: &'static [&'static str],
}

/// Go's zero value of a map's elements: what `index` gives for a missing key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Zero {
    /// A map of strings: "".
    EmptyString,
    /// A map of anything else: Go's invalid value.
    NoValue,
}

/// A value during execution.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    /// Go's invalid value: what a missing map key gives; prints `<no value>`.
    NoValue,
    /// JSON's null: a nil pointer, slice or map; prints `<nil>`.
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    List(Vec<Val>),
    Map(BTreeMap<String, Val>, Zero),
    Struct(Struct),
}

/// A struct: its fields and Go's name of its type, if known.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Struct {
    pub fields: BTreeMap<String, Val>,
    pub type_name: Option<&'static str>,
}

impl Val {
    /// `value` typed by `shape`: the top level is a struct.
    pub fn from_json(value: &Value, shape: &Shape) -> Val {
        match value {
            Value::Object(o) => Val::Struct(Struct {
                fields: object(o, shape),
                type_name: shape.type_name,
            }),
            other => convert(other, shape, None),
        }
    }

    /// The value as JSON (for `json`): structs and maps become objects.
    pub fn to_json(&self) -> Value {
        match self {
            Val::NoValue | Val::Nil => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Uint(u) => Value::from(*u),
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Val::Str(s) => Value::String(s.clone()),
            Val::List(l) => Value::Array(l.iter().map(Val::to_json).collect()),
            Val::Map(m, _) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Val::Struct(s) => Value::Object(
                s.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Go's name of the value's type, for messages.
    pub fn type_name(&self) -> String {
        match self {
            Val::NoValue => "<no value>".into(),
            Val::Nil => "<nil>".into(),
            Val::Bool(_) => "bool".into(),
            Val::Int(_) => "int".into(),
            Val::Uint(_) => "uint64".into(),
            Val::Float(_) => "float64".into(),
            Val::Str(_) => "string".into(),
            Val::List(_) => "[]interface {}".into(),
            Val::Map(_, Zero::EmptyString) => "map[string]string".into(),
            Val::Map(_, Zero::NoValue) => "map[string]interface {}".into(),
            Val::Struct(s) => s.type_name.unwrap_or("struct").into(),
        }
    }

    /// Go's truth: false, 0, nil, and empty strings, lists and maps are false.
    pub fn truth(&self) -> bool {
        match self {
            Val::NoValue | Val::Nil => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Uint(u) => *u != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::List(l) => !l.is_empty(),
            Val::Map(m, _) => !m.is_empty(),
            Val::Struct(_) => true,
        }
    }

    /// Go's default format (`%v`, and what an action prints).
    pub fn print(&self) -> String {
        let mut out = String::new();
        self.print_into(&mut out);
        out
    }

    fn print_into(&self, out: &mut String) {
        match self {
            Val::NoValue => out.push_str("<no value>"),
            Val::Nil => out.push_str("<nil>"),
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Uint(u) => {
                let _ = write!(out, "{u}");
            }
            Val::Float(f) => out.push_str(&format_float_g(*f, None)),
            Val::Str(s) => out.push_str(s),
            Val::List(l) => {
                out.push('[');
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.print_into(out);
                }
                out.push(']');
            }
            Val::Map(m, _) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.print_into(out);
                }
                out.push(']');
            }
            Val::Struct(s) => {
                out.push('{');
                for (i, v) in s.fields.values().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.print_into(out);
                }
                out.push('}');
            }
        }
    }
}

fn object(o: &serde_json::Map<String, Value>, shape: &Shape) -> BTreeMap<String, Val> {
    o.iter()
        .map(|(k, v)| {
            let zero = if shape.string_maps.contains(&k.as_str()) {
                Some(Zero::EmptyString)
            } else if shape.maps.contains(&k.as_str()) {
                Some(Zero::NoValue)
            } else {
                None
            };
            (k.clone(), convert(v, shape, zero))
        })
        .collect()
}

/// A JSON value below the top: an object is a map when its field says so, else a struct
/// (whose missing fields are reported the way inspect reports them).
fn convert(value: &Value, shape: &Shape, map: Option<Zero>) -> Val {
    match value {
        // Go's nil map: empty, and printed as `map[]`.
        Value::Null if map.is_some() => Val::Map(BTreeMap::new(), map.unwrap_or(Zero::NoValue)),
        Value::Null => Val::Nil,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Int(i)
            } else if let Some(u) = n.as_u64() {
                Val::Uint(u)
            } else {
                Val::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Val::Str(s.clone()),
        Value::Array(a) => Val::List(a.iter().map(|v| convert(v, shape, None)).collect()),
        Value::Object(o) => match map {
            Some(zero) => Val::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), convert(v, shape, None)))
                    .collect(),
                zero,
            ),
            None => Val::Struct(Struct {
                fields: object(o, shape),
                type_name: None,
            }),
        },
    }
}

/// A float as Go's `%g` writes it: the shortest representation when `precision` is None,
/// exponent form when the exponent is below -4 or at least the precision (6 for the
/// shortest form, as Go's strconv decides).
pub(super) fn format_float_g(f: f64, precision: Option<usize>) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Digits and exponent of the value, shortest or rounded to `precision` digits.
    let sci = match precision {
        None => format!("{f:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, f),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let limit = match precision {
        None => 6,
        Some(p) => p.max(1) as i32,
    };
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if exp < -4 || exp >= limit {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-exp - 1) as usize));
        out.push_str(digits);
    } else {
        let point = exp as usize + 1;
        if digits.len() <= point {
            out.push_str(digits);
            out.push_str(&"0".repeat(point - digits.len()));
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHAPE: Shape = Shape {
        type_name: Some("T"),
        string_maps: &["Labels"],
        maps: &[],
    };

    #[test]
    fn objects_are_structs_unless_their_field_is_a_map() {
        let v = Val::from_json(
            &json!({"Labels": {"a": "1"}, "State": {"Pid": 3}, "L": [{"x": null}]}),
            &SHAPE,
        );
        let Val::Struct(top) = &v else { panic!() };
        assert_eq!(top.type_name, Some("T"));
        assert!(matches!(
            top.fields["Labels"],
            Val::Map(_, Zero::EmptyString)
        ));
        assert!(matches!(top.fields["State"], Val::Struct(_)));
        assert_eq!(v.print(), "{[{<nil>}] map[a:1] {3}}");
        assert_eq!(v.to_json()["Labels"]["a"], "1");
    }

    #[test]
    fn floats_print_as_go_prints_them() {
        assert_eq!(format_float_g(0.5, None), "0.5");
        assert_eq!(format_float_g(1e6, None), "1e+06");
        assert_eq!(format_float_g(123456.0, None), "123456");
        assert_eq!(format_float_g(1e21, None), "1e+21");
        assert_eq!(format_float_g(0.00001, None), "1e-05");
        assert_eq!(format_float_g(4.56789, Some(3)), "4.57");
        assert_eq!(format_float_g(-2.0, None), "-2");
    }
}
