//! Golden tests: every case in `tests/fixtures/ops/*.json` (written by
//! `scripts/gen-fixtures.py` from NumPy) is run through tessera and compared. The format and
//! kwargs conventions are in `tests/fixtures/ops/README.md`.

use serde_json::{Map, Value};
use std::path::PathBuf;
use tessera_core::ops::{self, Axes, PadMode, SplitAt};
use tessera_core::{Array, Dtype, Result};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/ops")
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => match s.as_str() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => panic!("bad number string {other}"),
        },
        Value::Bool(b) => *b as u8 as f64,
        Value::Number(n) => n.as_f64().expect("number"),
        other => panic!("not a number: {other}"),
    }
}

fn dtype_of(s: &str) -> Dtype {
    Dtype::from_name(s).unwrap_or_else(|| panic!("unknown dtype {s}"))
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_u64().expect("uint") as usize)
        .collect()
}

/// Builds the base tensor, then applies its view steps.
fn tensor(t: &Value) -> Array {
    let dtype = dtype_of(t["dtype"].as_str().expect("dtype"));
    let shape = usizes(&t["shape"]);
    let data = t["data"].as_array().expect("data");
    let a = if dtype == Dtype::I64 {
        let v: Vec<i64> = data
            .iter()
            .map(|x| x.as_i64().unwrap_or_else(|| num(x) as i64))
            .collect();
        Array::from_slice(&v, &shape).expect("from_slice")
    } else if dtype == Dtype::U32 {
        let v: Vec<u32> = data
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|u| u as u32)
                    .unwrap_or_else(|| num(x) as u32)
            })
            .collect();
        Array::from_slice(&v, &shape).expect("from_slice")
    } else {
        let v: Vec<f64> = data.iter().map(num).collect();
        Array::from_slice(&v, &shape)
            .expect("from_slice")
            .astype(dtype)
            .expect("astype")
    };
    a.eval().expect("eval base");
    let mut a = a;
    if let Some(steps) = t.get("view").and_then(|v| v.as_array()) {
        for s in steps {
            if let Some(p) = s.get("transpose") {
                let p: Vec<isize> = p
                    .as_array()
                    .expect("axes")
                    .iter()
                    .map(|x| x.as_i64().expect("int") as isize)
                    .collect();
                a = ops::transpose(&a, Some(&p)).expect("view transpose");
            } else if let Some(sl) = s.get("slice") {
                let bounds: Vec<(Option<isize>, Option<isize>, isize)> = sl
                    .as_array()
                    .expect("slice")
                    .iter()
                    .map(|t| {
                        let t = t.as_array().expect("triple");
                        let o = |v: &Value| v.as_i64().map(|x| x as isize);
                        (
                            t.first().and_then(o),
                            t.get(1).and_then(o),
                            t.get(2).and_then(o).unwrap_or(1),
                        )
                    })
                    .collect();
                a = ops::slice_opt(&a, &bounds).expect("view slice");
            } else if let Some(sh) = s.get("broadcast_to") {
                a = ops::broadcast_to(&a, &usizes(sh)).expect("view broadcast");
            } else {
                panic!("unknown view step {s}");
            }
        }
    }
    a
}

struct Kw<'a>(&'a Map<String, Value>);

impl Kw<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k)
    }
    fn present(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    fn i(&self, k: &str, default: i64) -> i64 {
        self.present(k)
            .map(|v| v.as_i64().expect("int"))
            .unwrap_or(default)
    }
    fn f(&self, k: &str, default: f64) -> f64 {
        self.present(k).map(num).unwrap_or(default)
    }
    fn b(&self, k: &str, default: bool) -> bool {
        self.present(k)
            .map(|v| v.as_bool().expect("bool"))
            .unwrap_or(default)
    }
    fn dtype(&self, default: Dtype) -> Dtype {
        self.present("dtype")
            .map(|v| dtype_of(v.as_str().expect("dtype str")))
            .unwrap_or(default)
    }
    fn ints(&self, k: &str) -> Vec<isize> {
        match self.present(k) {
            Some(Value::Array(v)) => v
                .iter()
                .map(|x| x.as_i64().expect("int") as isize)
                .collect(),
            Some(v) => vec![v.as_i64().expect("int") as isize],
            None => vec![],
        }
    }
    /// `axis`: absent (all), int, or list.
    fn axes(&self) -> Axes {
        match self.present("axis") {
            None => Axes::All,
            Some(Value::Array(v)) => Axes::Some(
                v.iter()
                    .map(|x| x.as_i64().expect("int") as isize)
                    .collect(),
            ),
            Some(v) => Axes::Some(vec![v.as_i64().expect("int") as isize]),
        }
    }
    /// Optional single axis: absent/null -> None.
    fn opt_axis(&self) -> Option<isize> {
        self.present("axis")
            .map(|v| v.as_i64().expect("int") as isize)
    }
    /// Axis with a default when absent; null means flattened (None).
    fn axis_default(&self, default: isize) -> Option<isize> {
        match self.get("axis") {
            None => Some(default),
            Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().expect("int") as isize),
        }
    }
}

fn one(r: Result<Array>) -> Result<Vec<Array>> {
    r.map(|a| vec![a])
}

/// A scalar bound typed weakly against `like`.
fn weak(v: &Value, like: &Array) -> Array {
    ops::scalar_like(num(v), like)
}

fn run_op(op: &str, x: &[Array], kw: &Kw) -> Result<Vec<Array>> {
    let a = || x[0].clone();
    let b = || x[1].clone();
    macro_rules! unary {
        ($($name:literal => $f:path),*) => {
            match op { $($name => return one($f(&a())),)* _ => {} }
        };
    }
    unary!("exp" => ops::exp, "expm1" => ops::expm1, "log" => ops::log, "log1p" => ops::log1p,
        "log2" => ops::log2, "sqrt" => ops::sqrt, "rsqrt" => ops::rsqrt, "reciprocal" => ops::reciprocal,
        "sin" => ops::sin, "cos" => ops::cos, "tan" => ops::tan, "tanh" => ops::tanh, "sinh" => ops::sinh,
        "cosh" => ops::cosh, "arcsin" => ops::arcsin, "arccos" => ops::arccos, "arctan" => ops::arctan,
        "sigmoid" => ops::sigmoid, "erf" => ops::erf, "erfinv" => ops::erfinv, "abs" => ops::abs,
        "negative" => ops::negative, "sign" => ops::sign, "square" => ops::square, "floor" => ops::floor,
        "ceil" => ops::ceil, "isnan" => ops::isnan, "isinf" => ops::isinf, "logical_not" => ops::logical_not,
        "stop_gradient" => ops::stop_gradient, "contiguous" => ops::contiguous);
    macro_rules! binary {
        ($($name:literal => $f:path),*) => {
            match op { $($name => return one($f(&a(), &b())),)* _ => {} }
        };
    }
    binary!("add" => ops::add, "subtract" => ops::subtract, "multiply" => ops::multiply, "divide" => ops::divide,
        "floor_divide" => ops::floor_divide, "remainder" => ops::remainder, "power" => ops::power,
        "maximum" => ops::maximum, "minimum" => ops::minimum, "arctan2" => ops::arctan2, "logaddexp" => ops::logaddexp,
        "equal" => ops::equal, "not_equal" => ops::not_equal, "less" => ops::less, "less_equal" => ops::less_equal,
        "greater" => ops::greater, "greater_equal" => ops::greater_equal, "logical_and" => ops::logical_and,
        "logical_or" => ops::logical_or, "bitwise_and" => ops::bitwise_and, "bitwise_or" => ops::bitwise_or,
        "bitwise_xor" => ops::bitwise_xor, "left_shift" => ops::left_shift, "right_shift" => ops::right_shift,
        "matmul" => ops::matmul, "outer" => ops::outer, "inner" => ops::inner);
    let keep = kw.b("keepdims", false);
    match op {
        // creation
        "zeros" => one(ops::zeros(&usizes(&kw.0["shape"]), kw.dtype(Dtype::F32))),
        "ones" => one(ops::ones(&usizes(&kw.0["shape"]), kw.dtype(Dtype::F32))),
        "full" => {
            let v = &kw.0["vals"];
            let inferred = match v {
                Value::Bool(_) => Dtype::Bool,
                Value::Number(n) if n.is_i64() || n.is_u64() => Dtype::I32,
                _ => Dtype::F32,
            };
            one(ops::full(
                &usizes(&kw.0["shape"]),
                num(v),
                kw.dtype(inferred),
            ))
        }
        "arange" => {
            let all_int = ["start", "stop", "step"]
                .iter()
                .all(|k| kw.present(k).is_none_or(|v| v.is_i64()));
            let dt = kw.dtype(if all_int { Dtype::I32 } else { Dtype::F32 });
            one(ops::arange(
                kw.f("start", 0.0),
                kw.f("stop", 0.0),
                kw.f("step", 1.0),
                dt,
            ))
        }
        "linspace" => one(ops::linspace(
            kw.f("start", 0.0),
            kw.f("stop", 0.0),
            kw.i("num", 50) as usize,
            kw.dtype(Dtype::F32),
        )),
        "eye" => one(ops::eye(
            kw.i("n", 0) as usize,
            kw.present("m").map(|v| v.as_u64().expect("m") as usize),
            kw.i("k", 0) as isize,
            kw.dtype(Dtype::F32),
        )),
        "tri" => one(ops::tri(
            kw.i("n", 0) as usize,
            kw.present("m").map(|v| v.as_u64().expect("m") as usize),
            kw.i("k", 0) as isize,
            kw.dtype(Dtype::F32),
        )),
        "zeros_like" => one(ops::zeros_like(&a())),
        "ones_like" => one(ops::ones_like(&a())),
        "round" => one(ops::round_decimals(&a(), kw.i("decimals", 0) as i32)),
        // reductions
        "sum" => one(ops::sum(&a(), kw.axes(), keep)),
        "mean" => one(ops::mean(&a(), kw.axes(), keep)),
        "prod" => one(ops::prod(&a(), kw.axes(), keep)),
        "max" => one(ops::max(&a(), kw.axes(), keep)),
        "min" => one(ops::min(&a(), kw.axes(), keep)),
        "var" => one(ops::var(&a(), kw.axes(), keep, kw.i("ddof", 0) as usize)),
        "std" => one(ops::std(&a(), kw.axes(), keep, kw.i("ddof", 0) as usize)),
        "logsumexp" => one(ops::logsumexp(&a(), kw.axes(), keep)),
        "all" => one(ops::all(&a(), kw.axes(), keep)),
        "any" => one(ops::any(&a(), kw.axes(), keep)),
        "argmax" => one(ops::argmax(&a(), kw.opt_axis(), keep)),
        "argmin" => one(ops::argmin(&a(), kw.opt_axis(), keep)),
        "cumsum" | "cumprod" | "cummax" => {
            let f = match op {
                "cumsum" => ops::cumsum,
                "cumprod" => ops::cumprod,
                _ => ops::cummax,
            };
            one(f(
                &a(),
                kw.opt_axis(),
                kw.b("reverse", false),
                kw.b("inclusive", true),
            ))
        }
        "softmax" => one(ops::softmax(&a(), kw.axes())),
        "log_softmax" => one(ops::log_softmax(&a(), kw.axes())),
        // shape
        "reshape" => one(ops::reshape_infer(&a(), &kw.ints("shape"))),
        "flatten" => one(ops::flatten(
            &a(),
            kw.i("start_axis", 0) as isize,
            kw.i("end_axis", -1) as isize,
        )),
        "transpose" => {
            let ax = kw.present("axes").map(|_| kw.ints("axes"));
            one(ops::transpose(&a(), ax.as_deref()))
        }
        "swapaxes" => one(ops::swapaxes(
            &a(),
            kw.i("axis1", 0) as isize,
            kw.i("axis2", 0) as isize,
        )),
        "moveaxis" => one(ops::moveaxis(
            &a(),
            kw.i("source", 0) as isize,
            kw.i("destination", 0) as isize,
        )),
        "expand_dims" => one(ops::expand_dims(&a(), &kw.ints("axis"))),
        "squeeze" => one(ops::squeeze(&a(), kw.axes())),
        "broadcast_to" => one(ops::broadcast_to(&a(), &usizes(&kw.0["shape"]))),
        "concatenate" => one(ops::concatenate(x, kw.i("axis", 0) as isize)),
        "stack" => one(ops::stack(x, kw.i("axis", 0) as isize)),
        "split" => {
            let at = match &kw.0["indices_or_sections"] {
                Value::Array(_) => SplitAt::Indices(kw.ints("indices_or_sections")),
                v => SplitAt::Sections(v.as_u64().expect("sections") as usize),
            };
            ops::split(&a(), at, kw.i("axis", 0) as isize)
        }
        "pad" => {
            let nd = x[0].ndim();
            let pw: Vec<(usize, usize)> = match &kw.0["pad_width"] {
                Value::Number(n) => vec![
                    (
                        n.as_u64().expect("pad") as usize,
                        n.as_u64().expect("pad") as usize
                    );
                    nd
                ],
                Value::Array(v) if v.first().is_some_and(|e| e.is_array()) => v
                    .iter()
                    .map(|p| {
                        let p = usizes(p);
                        (p[0], p[1])
                    })
                    .collect(),
                Value::Array(v) => {
                    let p: Vec<usize> = v
                        .iter()
                        .map(|e| e.as_u64().expect("pad") as usize)
                        .collect();
                    vec![(p[0], p[1]); nd]
                }
                other => panic!("pad_width {other}"),
            };
            let mode = match kw.present("mode").and_then(|m| m.as_str()) {
                Some("edge") => PadMode::Edge,
                _ => PadMode::Constant(kw.f("constant_values", 0.0)),
            };
            one(ops::pad(&a(), &pw, mode))
        }
        "repeat" => one(ops::repeat(
            &a(),
            kw.i("repeats", 1) as usize,
            kw.opt_axis(),
        )),
        "tile" => one(ops::tile(
            &a(),
            &kw.ints("reps")
                .iter()
                .map(|&r| r as usize)
                .collect::<Vec<_>>(),
        )),
        "roll" => {
            let shifts = kw.ints("shift");
            match kw.present("axis") {
                None => one(ops::roll(&a(), shifts[0], None)),
                Some(_) => {
                    let axes = kw.ints("axis");
                    let mut r = a();
                    for (i, &ax) in axes.iter().enumerate() {
                        let s = if shifts.len() == 1 {
                            shifts[0]
                        } else {
                            shifts[i]
                        };
                        r = ops::roll(&r, s, Some(ax))?;
                    }
                    one(Ok(r))
                }
            }
        }
        "tril" => one(ops::tril(&a(), kw.i("k", 0) as isize)),
        "triu" => one(ops::triu(&a(), kw.i("k", 0) as isize)),
        // indexing
        "slice" => one(ops::slice_opt(&a(), &slice_bounds(kw))),
        "slice_update" => {
            let bounds = slice_bounds(kw);
            one(ops::slice_update_opt(&a(), &b(), &bounds))
        }
        "take" => one(ops::take(&a(), &b(), kw.opt_axis())),
        "take_along_axis" => one(ops::take_along_axis(&a(), &b(), kw.opt_axis())),
        "put_along_axis" => one(ops::put_along_axis(
            &a(),
            &b(),
            &x[2],
            kw.i("axis", 0) as isize,
        )),
        "scatter_add" => one(ops::scatter_add(
            &a(),
            &b(),
            &x[2],
            kw.i("axis", 0) as isize,
        )),
        "where" => one(ops::where_(&a(), &b(), &x[2])),
        // linalg
        "addmm" => one(ops::addmm(
            &a(),
            &b(),
            &x[2],
            kw.f("alpha", 1.0),
            kw.f("beta", 1.0),
        )),
        "tensordot" => match &kw.0["axes"] {
            Value::Array(v) => {
                let l = |i: usize| -> Vec<isize> {
                    v[i].as_array()
                        .expect("axes")
                        .iter()
                        .map(|e| e.as_i64().expect("int") as isize)
                        .collect()
                };
                one(ops::tensordot(&a(), &b(), &l(0), &l(1)))
            }
            n => {
                let n = n.as_i64().expect("axes") as isize;
                let na = x[0].ndim() as isize;
                let aa: Vec<isize> = (na - n..na).collect();
                let bb: Vec<isize> = (0..n).collect();
                one(ops::tensordot(&a(), &b(), &aa, &bb))
            }
        },
        "einsum" => one(ops::einsum(
            kw.0["subscripts"].as_str().expect("subscripts"),
            x,
        )),
        // misc
        "astype" => one(x[0].astype(kw.dtype(Dtype::F32))),
        "clip" => {
            if x.len() == 3 {
                one(ops::clip(&a(), Some(&b()), Some(&x[2])))
            } else {
                let lo = kw.present("a_min").map(|v| weak(v, &x[0]));
                let hi = kw.present("a_max").map(|v| weak(v, &x[0]));
                one(ops::clip(&a(), lo.as_ref(), hi.as_ref()))
            }
        }
        "isclose" => one(ops::isclose(
            &a(),
            &b(),
            kw.f("rtol", 1e-5),
            kw.f("atol", 1e-8),
            kw.b("equal_nan", false),
        )),
        "allclose" => one(ops::allclose(
            &a(),
            &b(),
            kw.f("rtol", 1e-5),
            kw.f("atol", 1e-8),
            kw.b("equal_nan", false),
        )),
        // sort
        "sort" => one(ops::sort(&a(), kw.axis_default(-1))),
        "argsort" => one(ops::argsort(&a(), kw.axis_default(-1))),
        "topk" => one(ops::topk(&a(), kw.i("k", 1) as usize, kw.axis_default(-1))),
        "argpartition" => one(ops::argpartition(
            &a(),
            kw.i("kth", 0) as isize,
            kw.axis_default(-1),
        )),
        other => panic!("no driver for op {other}"),
    }
}

fn slice_bounds(kw: &Kw) -> Vec<(Option<isize>, Option<isize>, isize)> {
    let list = |k: &str| -> Vec<Option<isize>> {
        kw.present(k)
            .and_then(|v| v.as_array())
            .map(|v| v.iter().map(|e| e.as_i64().map(|x| x as isize)).collect())
            .unwrap_or_default()
    };
    let (s, e, st) = (list("start"), list("stop"), list("strides"));
    let n = s.len().max(e.len()).max(st.len());
    (0..n)
        .map(|i| {
            (
                s.get(i).copied().flatten(),
                e.get(i).copied().flatten(),
                st.get(i).copied().flatten().unwrap_or(1),
            )
        })
        .collect()
}

fn values(a: &Array) -> Vec<f64> {
    if a.dtype() == Dtype::I64 {
        a.to_vec::<i64>()
            .expect("to_vec")
            .into_iter()
            .map(|v| v as f64)
            .collect()
    } else {
        a.to_vec::<f64>().expect("to_vec")
    }
}

fn compare(
    actual: &Array,
    expected: &Value,
    rtol: f64,
    atol: f64,
) -> std::result::Result<(), String> {
    let e = tensor(expected);
    if actual.dtype() != e.dtype() {
        return Err(format!(
            "dtype {} != expected {}",
            actual.dtype(),
            e.dtype()
        ));
    }
    if actual.shape() != e.shape() {
        return Err(format!(
            "shape {:?} != expected {:?}",
            actual.shape(),
            e.shape()
        ));
    }
    let (av, ev) = (values(actual), values(&e));
    let exact = !e.dtype().is_float();
    for (i, (x, y)) in av.iter().zip(&ev).enumerate() {
        let ok = if exact {
            x == y
        } else if y.is_nan() {
            x.is_nan()
        } else if y.is_infinite() {
            x == y
        } else {
            (x - y).abs() <= atol + rtol * y.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {x}, expected {y}"));
        }
    }
    Ok(())
}

/// Sorts `a` along `axis` (None: flattened) for order-free comparisons.
fn sorted(a: &Array, axis: Option<isize>) -> Array {
    ops::sort(a, axis).expect("sort")
}

fn check_partition(
    case: &Value,
    inputs: &[Array],
    out: &Array,
    kw: &Kw,
) -> std::result::Result<(), String> {
    let axis = kw.axis_default(-1);
    let x = match axis {
        None => ops::reshape(&inputs[0], &[inputs[0].size()]).map_err(|e| e.to_string())?,
        Some(_) => inputs[0].clone(),
    };
    let ax = axis.unwrap_or(0);
    let gathered = ops::take_along_axis(&x, out, Some(ax)).map_err(|e| e.to_string())?;
    let g_sorted = sorted(&gathered, Some(ax));
    let reference = tensor(&case["reference_sorted"]);
    if values(&g_sorted) != values(&sorted(&reference, Some(ax))) {
        return Err("not a permutation of the input".into());
    }
    let n = x.shape()[ops::normalize_axis("t", ax, x.ndim()).map_err(|e| e.to_string())?] as isize;
    let kth = kw.i("kth", 0) as isize;
    let kth = if kth < 0 { kth + n } else { kth };
    let pivot = ops::slice_axis(
        &g_sorted,
        ops::normalize_axis("t", ax, x.ndim()).map_err(|e| e.to_string())?,
        kth as usize,
        kth as usize + 1,
    )
    .map_err(|e| e.to_string())?;
    let at = ops::slice_axis(
        &gathered,
        ops::normalize_axis("t", ax, x.ndim()).map_err(|e| e.to_string())?,
        kth as usize,
        kth as usize + 1,
    )
    .map_err(|e| e.to_string())?;
    if values(&pivot) != values(&at) {
        return Err("kth element is not in its sorted place".into());
    }
    Ok(())
}

fn run_family(family: &str) {
    let path = fixture_dir().join(format!("{family}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/gen-fixtures.py)", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("fixture json");
    let cases = doc["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?");
        let op = case["op"].as_str().expect("op");
        let inputs: Vec<Array> = case["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(tensor)
            .collect();
        let empty = Map::new();
        let kw = Kw(case
            .get("kwargs")
            .and_then(|k| k.as_object())
            .unwrap_or(&empty));
        let rtol = case.get("rtol").map(num).unwrap_or(0.0);
        let atol = case.get("atol").map(num).unwrap_or(0.0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_op(op, &inputs, &kw).and_then(|outs| {
                for o in &outs {
                    o.eval()?;
                }
                Ok(outs)
            })
        }));
        let outcome: std::result::Result<(), String> = match (result, &case["expected"]) {
            (Err(_), _) => Err("panicked".into()),
            (Ok(Err(e)), Value::Object(o)) if o.contains_key("error") => {
                let _ = e;
                Ok(())
            }
            (Ok(Err(e)), _) if case.get("expected_property").is_none() => {
                Err(format!("error: {e}"))
            }
            (Ok(Err(e)), _) => Err(format!("error: {e}")),
            (Ok(Ok(_)), Value::Object(o)) if o.contains_key("error") => {
                Err(format!("expected an error ({})", o["error"]))
            }
            (Ok(Ok(outs)), _) if case.get("expected_property").is_some() => {
                check_partition(case, &inputs, &outs[0], &kw)
            }
            (Ok(Ok(outs)), Value::Array(list)) => {
                if outs.len() != list.len() {
                    Err(format!("{} outputs, expected {}", outs.len(), list.len()))
                } else {
                    outs.iter()
                        .zip(list)
                        .enumerate()
                        .try_for_each(|(i, (o, e))| {
                            compare(o, e, rtol, atol).map_err(|m| format!("output {i}: {m}"))
                        })
                }
            }
            (Ok(Ok(outs)), e) => {
                let out = if case.get("compare").and_then(|c| c.as_str()) == Some("sorted") {
                    sorted(&outs[0], kw.axis_default(-1))
                } else {
                    outs[0].clone()
                };
                compare(&out, e, rtol, atol)
            }
        };
        if let Err(m) = outcome {
            failures.push(format!("{id}: {m}"));
        }
    }
    println!("{family}: {} cases, {} failed", cases.len(), failures.len());
    if !failures.is_empty() {
        panic!(
            "{} of {} {family} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}

macro_rules! families {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            run_family(stringify!($name));
        }
    )*};
}

families!(
    creation, unary, binary, reduce, scan, shape, indexing, linalg, misc, sort
);

/// The same cases through the portable and AVX2 kernels (the machine's best path ran above):
/// re-runs this test binary with `TESSERA_SIMD` capped, since the level is fixed per process.
#[test]
fn portable_and_avx2_paths() {
    if std::env::var_os("TESSERA_SIMD").is_some() {
        return; // we are the child run
    }
    let exe = std::env::current_exe().expect("test binary path");
    for level in ["scalar", "avx2"] {
        let out = std::process::Command::new(&exe)
            .env("TESSERA_SIMD", level)
            .args(["--test-threads", "2", "--skip", "portable_and_avx2_paths"])
            .output()
            .expect("run the golden tests again");
        assert!(
            out.status.success(),
            "golden tests fail with TESSERA_SIMD={level}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
