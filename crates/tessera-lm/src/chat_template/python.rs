//! Python's view of template values: `str()` (what `{{ x }}` prints in jinja2), `repr()` (how
//! lists and dicts print their items) and `json.dumps` (transformers' `tojson` filter), plus the
//! jinja2 tests and filters whose minijinja versions disagree with Python.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, State, Value};

/// `str(value)` as jinja2 prints it: undefined is empty, `None`/`True`/`False` are capitalised,
/// floats use Python's shortest repr, containers print their items with `repr`.
pub(crate) fn py_str(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Seq | ValueKind::Map => {
            py_repr(value, out)
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// `repr(value)`.
pub(crate) fn py_repr(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined => out.push_str("Undefined"),
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => py_number(value, out),
        ValueKind::String => repr_str(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            let tuple = value.is_tuple();
            out.push(if tuple { '(' } else { '[' });
            let mut n = 0;
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&item, out);
                    n += 1;
                }
            }
            if tuple && n == 1 {
                out.push(',');
            }
            out.push(if tuple { ')' } else { ']' });
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = value.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&key, out);
                    out.push_str(": ");
                    py_repr(&value.get_item(&key).unwrap_or_default(), out);
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

fn py_number(value: &Value, out: &mut String) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
    } else {
        match f64::try_from(value.clone()) {
            Ok(f) => float_repr(f, out),
            Err(_) => {
                let _ = write!(out, "{value}");
            }
        }
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional notation for decimal
/// exponents in [-4, 16), scientific (`1e+16`, `2.5e-05`) otherwise.
pub(crate) fn float_repr(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f < 0.0 { "-inf" } else { "inf" });
        return;
    }
    // Rust's `{:e}` prints the shortest round-trip digits: "-1.2345e-7", "1e16", "0e0".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double quote.
fn repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa1).contains(&(c as u32)) || c == '\u{ad}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Options of `json.dumps` that transformers' `tojson` filter exposes.
struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, with Python's signature (a positional argument is
/// `ensure_ascii`, then `indent`; `separators` and `sort_keys` by keyword).
pub(crate) fn tojson_filter(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let ensure_ascii = match (ensure_ascii, kwargs.get::<Option<Value>>("ensure_ascii")?) {
        (Some(_), Some(_)) => return Err(multiple("ensure_ascii")),
        (Some(v), None) | (None, Some(v)) => v.is_true(),
        (None, None) => false,
    };
    let indent = match (indent, kwargs.get::<Option<Value>>("indent")?) {
        (Some(_), Some(_)) => return Err(multiple("indent")),
        (Some(v), None) | (None, Some(v)) => Some(v),
        (None, None) => None,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                let n = i64::try_from(v).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an int or a str",
                    )
                })?;
                Some(" ".repeat(n.max(0) as usize))
            }
        },
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Value>>("separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be strings",
                    )
                })?;
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair (item_separator, key_separator)",
                    ));
                }
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let sort_keys = kwargs
        .get::<Option<Value>>("sort_keys")?
        .is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let opts = JsonOptions {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    dumps(value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

fn multiple(name: &str) -> Error {
    Error::new(
        ErrorKind::TooManyArguments,
        format!("tojson() got multiple values for argument '{name}'"),
    )
}

fn newline_indent(opts: &JsonOptions, level: usize, out: &mut String) {
    if let Some(indent) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn not_serializable(value: &Value) -> Error {
    let ty = match value.kind() {
        ValueKind::Undefined => "Undefined".to_string(),
        ValueKind::Iterable => "generator".to_string(),
        kind => kind.to_string(),
    };
    Error::new(
        ErrorKind::InvalidOperation,
        format!("Object of type {ty} is not JSON serializable"),
    )
}

fn dumps(value: &Value, opts: &JsonOptions, level: usize, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => json_number(value, out),
        ValueKind::String => json_str(value.as_str().unwrap_or_default(), opts.ensure_ascii, out),
        // Lazy iterables are what jinja2 gives as generators, ranges and dict views, which
        // json.dumps rejects: only real lists serialize.
        ValueKind::Seq => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(opts, level + 1, out);
                dumps(item, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(opts, level + 1, out);
                json_str(key, opts.ensure_ascii, out);
                out.push_str(&opts.key_sep);
                dumps(item, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push('}');
        }
        _ => return Err(not_serializable(value)),
    }
    Ok(())
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers/bools/None converted.
fn json_key(key: &Value) -> Result<String, Error> {
    let mut s = String::new();
    match key.kind() {
        ValueKind::String => s.push_str(key.as_str().unwrap_or_default()),
        ValueKind::Number => json_number(key, &mut s),
        ValueKind::Bool => s.push_str(if key.is_true() { "true" } else { "false" }),
        ValueKind::None => s.push_str("null"),
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "keys must be str, int, float, bool or None, not {}",
                    key.kind()
                ),
            ));
        }
    }
    Ok(s)
}

fn json_number(value: &Value, out: &mut String) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
        return;
    }
    match f64::try_from(value.clone()) {
        Ok(f) if f.is_nan() => out.push_str("NaN"),
        Ok(f) if f.is_infinite() => out.push_str(if f < 0.0 { "-Infinity" } else { "Infinity" }),
        Ok(f) => float_repr(f, out),
        Err(_) => {
            let _ = write!(out, "{value}");
        }
    }
}

/// A JSON string as Python's encoder writes it (lowercase `\u00XX` escapes; with `ensure_ascii`
/// everything outside printable ASCII is escaped, astral characters as surrogate pairs).
fn json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// jinja2's `string` filter: `str(value)`.
pub(crate) fn string_filter(value: &Value) -> Value {
    if value.kind() == ValueKind::String {
        return value.clone();
    }
    let mut s = String::new();
    py_str(value, &mut s);
    Value::from(s)
}

/// jinja2's `join(value, d='', attribute=None)`: `str()` of each item.
pub(crate) fn join_filter(
    value: &Value,
    sep: Option<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let attribute: Option<Value> = kwargs.get("attribute")?;
    let sep = match (sep, kwargs.get::<Option<String>>("d")?) {
        (Some(s), None) | (None, Some(s)) => s,
        (None, None) => String::new(),
        (Some(_), Some(_)) => {
            return Err(Error::new(
                ErrorKind::TooManyArguments,
                "join() got multiple values for argument 'd'",
            ));
        }
    };
    kwargs.assert_all_used()?;
    if value.is_undefined() || value.is_none() {
        return Ok(Value::from(""));
    }
    let mut out = String::new();
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(&sep);
        }
        let item = match &attribute {
            Some(attr) => item_attribute(&item, attr)?,
            None => item,
        };
        py_str(&item, &mut out);
    }
    Ok(Value::from(out))
}

/// jinja2's attribute lookup for `attribute=` arguments: dotted paths, integer parts index.
fn item_attribute(item: &Value, attr: &Value) -> Result<Value, Error> {
    if let Some(path) = attr.as_str() {
        let mut v = item.clone();
        for part in path.split('.') {
            v = match part.parse::<i64>() {
                Ok(i) => v.get_item(&Value::from(i))?,
                Err(_) => v.get_attr(part)?,
            };
        }
        Ok(v)
    } else {
        item.get_item(attr)
    }
}

/// jinja2's `sequence` test: anything with `len()` and `[]` (strings and dicts too; undefined
/// as well, as jinja2's `Undefined` has both).
pub(crate) fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::Undefined | ValueKind::String | ValueKind::Seq | ValueKind::Map
    )
}

/// jinja2's `number` test: `isinstance(value, numbers.Number)`, which holds for booleans.
pub(crate) fn is_number(value: &Value) -> bool {
    matches!(value.kind(), ValueKind::Number | ValueKind::Bool)
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the ASCII information
/// separators U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python methods that minijinja-contrib's pycompat lacks or answers differently; everything
/// else goes to pycompat.
pub(crate) fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    let no_args = args.is_empty() || (args.len() == 1 && args[0].is_none());
    match (value.kind(), method, value.as_str()) {
        (ValueKind::String, "strip" | "lstrip" | "rstrip", Some(s)) if no_args => {
            Ok(Value::from(match method {
                "strip" => s.trim_matches(py_space),
                "lstrip" => s.trim_start_matches(py_space),
                _ => s.trim_end_matches(py_space),
            }))
        }
        (ValueKind::String, "split", Some(s)) if no_args => Ok(Value::from(
            s.split(py_space)
                .filter(|p| !p.is_empty())
                .map(Value::from)
                .collect::<Vec<_>>(),
        )),
        (ValueKind::String, "isspace", Some(s)) if args.is_empty() => {
            Ok(Value::from(!s.is_empty() && s.chars().all(py_space)))
        }
        (ValueKind::Seq, "index", _) if args.len() == 1 => value
            .try_iter()?
            .position(|item| item == args[0])
            .map(Value::from)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{} is not in list", args[0]),
                )
            }),
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}

/// jinja2's `trim(value, chars=None)`: `str.strip` with Python's whitespace.
pub(crate) fn trim_filter(value: &Value, chars: Option<String>) -> Result<Value, Error> {
    let mut s = String::new();
    py_str(value, &mut s);
    Ok(Value::from(match chars {
        Some(chars) => s.trim_matches(|c| chars.contains(c)),
        None => s.trim_matches(py_space),
    }))
}

/// A string argument with Python's surrounding whitespace removed (what `int()` and `float()`
/// ignore); other values as they are.
fn trimmed(value: &Value) -> Value {
    match value.as_str() {
        Some(s) => Value::from(s.trim_matches(py_space)),
        None => value.clone(),
    }
}

/// jinja2's `int(value, default=0, base=10)`: what cannot be converted gives `default`.
pub(crate) fn int_filter(
    state: &State,
    value: &Value,
    default: Option<Value>,
    base: Option<u32>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let default = match default {
        Some(d) => d,
        None => kwargs
            .get::<Option<Value>>("default")?
            .unwrap_or_else(|| Value::from(0)),
    };
    minijinja::filters::int(state, &trimmed(value), Some(default), base, kwargs)
}

/// jinja2's `float(value, default=0.0)`.
pub(crate) fn float_filter(
    state: &State,
    value: &Value,
    default: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let default = match default {
        Some(d) => d,
        None => kwargs
            .get::<Option<Value>>("default")?
            .unwrap_or_else(|| Value::from(0.0)),
    };
    minijinja::filters::float(state, &trimmed(value), Some(default), kwargs)
}

/// jinja2's `truncate(s, length=255, killwords=False, end='...', leeway=5)`.
pub(crate) fn truncate_filter(
    value: &Value,
    length: Option<usize>,
    killwords: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let length = match length {
        Some(l) => l,
        None => kwargs.get::<Option<usize>>("length")?.unwrap_or(255),
    };
    let killwords = match killwords {
        Some(k) => k,
        None => kwargs.get::<Option<bool>>("killwords")?.unwrap_or(false),
    };
    let end: String = kwargs
        .get::<Option<String>>("end")?
        .unwrap_or_else(|| "...".to_string());
    let leeway = kwargs.get::<Option<usize>>("leeway")?.unwrap_or(5);
    kwargs.assert_all_used()?;
    let mut s = String::new();
    py_str(value, &mut s);
    let end_len = end.chars().count();
    if length < end_len {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("expected length >= {end_len}, got {length}"),
        ));
    }
    if s.chars().count() <= length + leeway {
        return Ok(Value::from(s));
    }
    let head: String = s.chars().take(length - end_len).collect();
    let head = if killwords {
        head.as_str()
    } else {
        head.rsplit_once(' ')
            .map_or(head.as_str(), |(before, _)| before)
    };
    Ok(Value::from(format!("{head}{end}")))
}

/// jinja2's `wordcount`: the number of `\w+` runs.
pub(crate) fn wordcount_filter(value: &Value) -> Value {
    let mut s = String::new();
    py_str(value, &mut s);
    let words = s
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .count();
    Value::from(words)
}

/// jinja2's `iterable` test: `iter(value)` works (not for `None`, unlike minijinja's).
pub(crate) fn is_iterable(value: &Value) -> bool {
    !value.is_none() && value.try_iter().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(f: f64) -> String {
        let mut s = String::new();
        float_repr(f, &mut s);
        s
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (123456.789, "123456.789"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (1e100, "1e+100"),
            (f64::INFINITY, "inf"),
        ];
        for (f, want) in cases {
            assert_eq!(repr(f), want, "{f}");
        }
    }

    #[test]
    fn str_repr_quotes_like_python() {
        let mut s = String::new();
        repr_str("it's", &mut s);
        assert_eq!(s, "\"it's\"");
        s.clear();
        repr_str("a'b\"c\n", &mut s);
        assert_eq!(s, "'a\\'b\"c\\n'");
    }
}
