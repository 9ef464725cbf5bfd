//! NumPy-style printing: `array([[1, 2],\n       [3, 4]], dtype=int32)`. Large arrays show
//! their first and last three entries per axis.

use crate::array::Array;
use crate::dtype::Dtype;
use std::fmt;

const SUMMARY_THRESHOLD: usize = 1000;
const EDGE: usize = 3;

fn fmt_value(v: f64, dtype: Dtype) -> String {
    match dtype {
        Dtype::Bool => if v != 0.0 { "True" } else { "False" }.to_string(),
        d if d.is_float() => {
            if v.is_nan() {
                "nan".into()
            } else if v.is_infinite() {
                if v > 0.0 { "inf".into() } else { "-inf".into() }
            } else {
                let s = if d == Dtype::F64 {
                    format!("{v}")
                } else {
                    format!("{}", v as f32)
                };
                if s.contains('.') || s.contains('e') {
                    s
                } else {
                    format!("{s}.")
                }
            }
        }
        _ => format!("{}", v as i128),
    }
}

impl fmt::Display for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtype = self.dtype();
        // Integers beyond 2^53 print through i64 to stay exact.
        let values: Result<Vec<String>, _> = if dtype == Dtype::I64 {
            self.to_vec::<i64>()
                .map(|v| v.into_iter().map(|x| x.to_string()).collect())
        } else {
            self.to_vec::<f64>()
                .map(|v| v.into_iter().map(|x| fmt_value(x, dtype)).collect())
        };
        let values = match values {
            Ok(v) => v,
            Err(e) => {
                return write!(
                    f,
                    "array(<not evaluated: {e}>, shape={:?}, dtype={dtype})",
                    self.shape()
                );
            }
        };
        let values = if dtype.is_float() {
            align_decimal_points(values)
        } else {
            values
        };
        let shape = self.shape().to_vec();
        let summarize = values.len() > SUMMARY_THRESHOLD;
        let width = values.iter().map(|s| s.len()).max().unwrap_or(1);
        let mut out = String::from("array(");
        if shape.is_empty() {
            out.push_str(&values[0]);
        } else {
            write_level(&mut out, &values, &shape, 0, 0, width, summarize, 6);
        }
        out.push_str(&format!(", dtype={dtype})"));
        f.write_str(&out)
    }
}

/// NumPy aligns positional floats on the decimal point: the integer parts are right-aligned
/// and the fractions left-aligned (`[1.5, 2. ]`, not `[1.5,  2.]`). Values in exponent notation
/// keep their plain right alignment.
fn align_decimal_points(values: Vec<String>) -> Vec<String> {
    if values.iter().any(|s| s.contains('e')) {
        return values;
    }
    let split = |s: &str| s.find('.').map(|i| (i, s.len() - i));
    let (int_w, frac_w) = values
        .iter()
        .filter_map(|s| split(s))
        .fold((0, 0), |(a, b), (i, f)| (a.max(i), b.max(f)));
    // nan / inf widen the integer part when the fractions leave them too little room (NumPy).
    let non_finite = values
        .iter()
        .filter(|s| !s.contains('.'))
        .map(|s| s.len())
        .max()
        .unwrap_or(0);
    let int_w = int_w.max(non_finite.saturating_sub(frac_w));
    values
        .into_iter()
        .map(|s| match split(&s) {
            Some((i, f)) => format!("{}{s}{}", " ".repeat(int_w - i), " ".repeat(frac_w - f)),
            // nan / inf: right-aligned in the full width, as NumPy does.
            None => format!("{s:>w$}", w = int_w + frac_w),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn write_level(
    out: &mut String,
    v: &[String],
    shape: &[usize],
    dim: usize,
    offset: usize,
    width: usize,
    summarize: bool,
    indent: usize,
) {
    let n = shape[dim];
    let stride: usize = shape[dim + 1..].iter().product();
    out.push('[');
    let idx: Vec<Option<usize>> = if summarize && n > 2 * EDGE {
        (0..EDGE)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    };
    for (k, i) in idx.iter().enumerate() {
        if k > 0 {
            if dim + 1 == shape.len() {
                out.push_str(", ");
            } else {
                out.push(',');
                out.push_str(&"\n".repeat(shape.len() - dim - 1));
                out.push_str(&" ".repeat(indent + dim + 1));
            }
        }
        match i {
            None => out.push_str("..."),
            Some(i) => {
                if dim + 1 == shape.len() {
                    out.push_str(&format!("{:>width$}", v[offset + i], width = width));
                } else {
                    write_level(
                        out,
                        v,
                        shape,
                        dim + 1,
                        offset + i * stride,
                        width,
                        summarize,
                        indent,
                    );
                }
            }
        }
    }
    out.push(']');
}
