//! Every element-wise, reduction, scan, sort and indexing op, in every dtype it accepts, gives the
//! same result on a strided view (transposed, negative-step slice, broadcast) as on a row-major
//! copy of the same values. The golden tests pin the values; this pins the strided kernels.

use tessera_core::ops::{self, Axes};
use tessera_core::{Array, Dtype, random};

/// A (4, 6) array of `dtype` with values that every op accepts (positive, below 1 for the
/// inverse trig ops when `unit` is set).
fn base(dtype: Dtype, unit: bool, seed: u64) -> Array {
    let (lo, hi) = if unit {
        (0.05, 0.95)
    } else if dtype.is_float() {
        (-3.0, 3.0)
    } else {
        (0.0, 9.0)
    };
    let u = random::uniform(lo, hi, &[6, 8], Dtype::F32, Some(&random::key(seed))).unwrap();
    let u = if dtype.is_float() {
        u
    } else {
        ops::floor(&u).unwrap()
    };
    u.astype(dtype).unwrap()
}

/// Three strided views of `x` (shape (4, 6) each) and their row-major copies.
fn views(x: &Array) -> Vec<(&'static str, Array)> {
    let t = ops::transpose(x, None).unwrap(); // (8, 6)
    let t = ops::slice(&t, &[1, 0], &[5, 6], &[1, 1]).unwrap(); // (4, 6), strided
    let s = ops::slice_opt(x, &[(Some(5), None, -1), (Some(7), None, -1)]).unwrap(); // (6, 8) reversed
    let s = ops::slice(&s, &[0, 0], &[4, 8], &[1, 1]).unwrap();
    let s = ops::slice(&s, &[0, 0], &[4, 6], &[1, 1]).unwrap();
    let row = ops::slice(x, &[2, 0], &[3, 6], &[1, 1]).unwrap(); // (1, 6)
    let b = ops::broadcast_to(&row, &[4, 6]).unwrap();
    vec![("transposed", t), ("reversed", s), ("broadcast", b)]
}

fn same(a: &Array, b: &Array, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    assert_eq!(a.dtype(), b.dtype(), "{what}");
    let (x, y) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(
            p == q || (p.is_nan() && q.is_nan()),
            "{what}: element {i}: {p} vs {q}"
        );
    }
}

/// Like `same` but within `tol` relative: matmul picks kernels (and summation order) by layout.
fn close(a: &Array, b: &Array, tol: f64, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let (x, y) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(
            (p - q).abs() <= tol * q.abs().max(1.0),
            "{what}: element {i}: {p} vs {q}"
        );
    }
}

type Unary = fn(&Array) -> tessera_core::Result<Array>;

#[test]
fn unary_ops_on_strided_views() {
    let float_ops: &[(&str, Unary, bool)] = &[
        ("exp", ops::exp, false),
        ("expm1", ops::expm1, false),
        ("log", ops::log, true),
        ("log1p", ops::log1p, true),
        ("log2", ops::log2, true),
        ("sqrt", ops::sqrt, true),
        ("rsqrt", ops::rsqrt, true),
        ("reciprocal", ops::reciprocal, true),
        ("sin", ops::sin, false),
        ("cos", ops::cos, false),
        ("tan", ops::tan, true),
        ("tanh", ops::tanh, false),
        ("sinh", ops::sinh, false),
        ("cosh", ops::cosh, false),
        ("arcsin", ops::arcsin, true),
        ("arccos", ops::arccos, true),
        ("arctan", ops::arctan, false),
        ("sigmoid", ops::sigmoid, false),
        ("erf", ops::erf, false),
        ("erfinv", ops::erfinv, true),
        ("floor", ops::floor, false),
        ("ceil", ops::ceil, false),
        ("round", ops::round, false),
        ("isnan", ops::isnan, false),
        ("isinf", ops::isinf, false),
        ("abs", ops::abs, false),
        ("negative", ops::negative, false),
        ("sign", ops::sign, false),
        ("square", ops::square, false),
        ("logical_not", ops::logical_not, false),
    ];
    let int_ops: &[(&str, Unary)] = &[
        ("abs", ops::abs),
        ("negative", ops::negative),
        ("sign", ops::sign),
        ("square", ops::square),
        ("floor", ops::floor),
        ("logical_not", ops::logical_not),
        ("bitwise_invert", ops::bitwise_invert),
        ("exp", ops::exp),
    ];
    for dt in [Dtype::F16, Dtype::BF16, Dtype::F32, Dtype::F64] {
        for &(name, f, unit) in float_ops {
            let x = base(dt, unit, 1);
            for (view, v) in views(&x) {
                let c = ops::contiguous(&v).unwrap();
                same(
                    &f(&v).unwrap(),
                    &f(&c).unwrap(),
                    &format!("{name} {dt} {view}"),
                );
            }
        }
    }
    for dt in [Dtype::U8, Dtype::U32, Dtype::I32, Dtype::I64] {
        for &(name, f) in int_ops {
            let x = base(dt, false, 2);
            for (view, v) in views(&x) {
                let c = ops::contiguous(&v).unwrap();
                same(
                    &f(&v).unwrap(),
                    &f(&c).unwrap(),
                    &format!("{name} {dt} {view}"),
                );
            }
        }
    }
}

type Binary = fn(&Array, &Array) -> tessera_core::Result<Array>;

#[test]
fn binary_ops_on_strided_views() {
    let all: &[(&str, Binary, bool)] = &[
        ("add", ops::add, true),
        ("subtract", ops::subtract, true),
        ("multiply", ops::multiply, true),
        ("divide", ops::divide, true),
        ("floor_divide", ops::floor_divide, true),
        ("remainder", ops::remainder, true),
        ("power", ops::power, true),
        ("maximum", ops::maximum, true),
        ("minimum", ops::minimum, true),
        ("arctan2", ops::arctan2, true),
        ("logaddexp", ops::logaddexp, true),
        ("equal", ops::equal, true),
        ("not_equal", ops::not_equal, true),
        ("less", ops::less, true),
        ("less_equal", ops::less_equal, true),
        ("greater", ops::greater, true),
        ("greater_equal", ops::greater_equal, true),
        ("logical_and", ops::logical_and, true),
        ("logical_or", ops::logical_or, true),
        ("bitwise_and", ops::bitwise_and, false),
        ("bitwise_or", ops::bitwise_or, false),
        ("bitwise_xor", ops::bitwise_xor, false),
        ("left_shift", ops::left_shift, false),
        ("right_shift", ops::right_shift, false),
    ];
    for dt in Dtype::ALL {
        for &(name, f, floats_ok) in all {
            if dt.is_float() && !floats_ok {
                continue;
            }
            if dt == Dtype::Bool && name == "subtract" {
                continue; // an error by design (NumPy's rule), checked by the golden tests
            }
            let (x, y) = (base(dt, false, 3), base(dt, false, 4));
            // Keep divisors non-zero for the integer division ops (they give 0 there anyway).
            let y = if dt.is_float() || dt == Dtype::Bool {
                y
            } else {
                ops::add(&y, &Array::scalar_of(1.0, dt)).unwrap()
            };
            let y = if name.ends_with("shift") {
                ops::remainder(&y, &Array::scalar_of(7.0, dt)).unwrap()
            } else {
                y
            };
            for ((view, a), (_, b)) in views(&x).into_iter().zip(views(&y).into_iter().rev()) {
                let (ca, cb) = (ops::contiguous(&a).unwrap(), ops::contiguous(&b).unwrap());
                same(
                    &f(&a, &b).unwrap(),
                    &f(&ca, &cb).unwrap(),
                    &format!("{name} {dt} {view}"),
                );
            }
        }
    }
}

#[test]
fn reductions_scans_sorts_and_gathers_on_strided_views() {
    for dt in Dtype::ALL {
        let x = base(dt, false, 5);
        for (view, v) in views(&x) {
            let c = ops::contiguous(&v).unwrap();
            let what = |op: &str| format!("{op} {dt} {view}");
            for axes in [
                Axes::All,
                Axes::Some(vec![0]),
                Axes::Some(vec![1]),
                Axes::Some(vec![-1, 0]),
            ] {
                let rs: [(&str, fn(&Array, Axes, bool) -> tessera_core::Result<Array>); 6] = [
                    ("sum", |a, x, k| ops::sum(a, x, k)),
                    ("prod", |a, x, k| ops::prod(a, x, k)),
                    ("max", |a, x, k| ops::max(a, x, k)),
                    ("min", |a, x, k| ops::min(a, x, k)),
                    ("all", |a, x, k| ops::all(a, x, k)),
                    ("any", |a, x, k| ops::any(a, x, k)),
                ];
                for (name, f) in rs {
                    if dt == Dtype::Bool && name == "prod" {
                        continue;
                    }
                    same(
                        &f(&v, axes.clone(), true).unwrap(),
                        &f(&c, axes.clone(), true).unwrap(),
                        &what(name),
                    );
                }
            }
            for axis in [None, Some(0), Some(1)] {
                same(
                    &ops::argmax(&v, axis, false).unwrap(),
                    &ops::argmax(&c, axis, false).unwrap(),
                    &what("argmax"),
                );
                same(
                    &ops::argmin(&v, axis, false).unwrap(),
                    &ops::argmin(&c, axis, false).unwrap(),
                    &what("argmin"),
                );
                same(
                    &ops::sort(&v, axis).unwrap(),
                    &ops::sort(&c, axis).unwrap(),
                    &what("sort"),
                );
                same(
                    &ops::argsort(&v, axis).unwrap(),
                    &ops::argsort(&c, axis).unwrap(),
                    &what("argsort"),
                );
                if dt != Dtype::Bool {
                    same(
                        &ops::cumsum(&v, axis, false, true).unwrap(),
                        &ops::cumsum(&c, axis, false, true).unwrap(),
                        &what("cumsum"),
                    );
                    same(
                        &ops::cummax(&v, axis, true, false).unwrap(),
                        &ops::cummax(&c, axis, true, false).unwrap(),
                        &what("cummax"),
                    );
                }
            }
            let idx = Array::from_slice(&[3i32, 0, -1, 1], &[4]).unwrap();
            same(
                &ops::take(&v, &idx, Some(1)).unwrap(),
                &ops::take(&c, &idx, Some(1)).unwrap(),
                &what("take"),
            );
            let along = Array::from_slice(&[5u32, 0, 2, 1, 3, 4], &[1, 6]).unwrap();
            same(
                &ops::take_along_axis(&v, &along, Some(1)).unwrap(),
                &ops::take_along_axis(&c, &along, Some(1)).unwrap(),
                &what("take_along_axis"),
            );
            same(
                &ops::concatenate(&[v.clone(), c.clone()], 1).unwrap(),
                &ops::concatenate(&[c.clone(), c.clone()], 1).unwrap(),
                &what("concatenate"),
            );
            let upd = ops::slice(&v, &[0, 0], &[2, 3], &[1, 1]).unwrap();
            same(
                &ops::slice_update(&c, &upd, &[1, 2], &[3, 5], &[1, 1]).unwrap(),
                &ops::slice_update(
                    &c,
                    &ops::contiguous(&upd).unwrap(),
                    &[1, 2],
                    &[3, 5],
                    &[1, 1],
                )
                .unwrap(),
                &what("slice_update"),
            );
            same(
                &ops::where_(&ops::greater(&v, &c).unwrap(), &v, &c).unwrap(),
                &c,
                &what("where"),
            );
            if dt.is_float() {
                let tol = match dt {
                    Dtype::F16 => 2e-3,
                    Dtype::BF16 => 1e-2,
                    Dtype::F32 => 1e-6,
                    _ => 1e-12,
                };
                close(
                    &ops::matmul(&v, &ops::transpose(&v, None).unwrap()).unwrap(),
                    &ops::matmul(&c, &ops::transpose(&c, None).unwrap()).unwrap(),
                    tol,
                    &what("matmul"),
                );
            }
            for to in Dtype::ALL {
                same(
                    &v.astype(to).unwrap(),
                    &c.astype(to).unwrap(),
                    &what(&format!("astype {to}")),
                );
            }
        }
    }
}
