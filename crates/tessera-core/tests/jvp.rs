//! Forward mode: every differentiable primitive's jvp rule against central finite differences
//! (along the tangent) and against its vjp by the inner-product identity <J t, u> = <t, Jᵀ u>;
//! then compositions (jvp of jvp, vjp of jvp, jvp of vjp, vmap and compile of jvp), custom
//! rules, the one-forward-pass structure, and the new cumprod/cummax/cummin VJPs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tessera_core::collective::{CollectiveReduce, Communicator, GroupRef};
use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{
    CustomFunction, checkpoint, compile, custom_jvp, custom_vjp, grad, jvp, vjp, vmap,
};
use tessera_core::{Array, Dtype, Primitive, Result, random};

fn rand(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Array {
    random::uniform(lo, hi, shape, Dtype::F64, Some(&random::key(seed))).unwrap()
}

fn randf(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Array {
    random::uniform(lo, hi, shape, Dtype::F32, Some(&random::key(seed))).unwrap()
}

fn vals(a: &Array) -> Vec<f64> {
    a.astype(Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

fn dot(a: &Array, b: &Array) -> f64 {
    vals(a).iter().zip(vals(b)).map(|(x, y)| x * y).sum()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{name}[{j}]: {g} vs {w}"
        );
    }
}

type F<'a> = dyn Fn(&[Array]) -> Result<Array> + 'a;

/// Finite-difference step and tolerances for one precision.
#[derive(Clone, Copy)]
struct Tol {
    h: f64,
    fd: f64,
    ip: f64,
}
const T64: Tol = Tol {
    h: 1e-6,
    fd: 1e-5,
    ip: 1e-10,
};
const T32: Tol = Tol {
    h: 1e-2,
    fd: 3e-3,
    ip: 1e-4,
};

/// The jvp of `f` at `inputs` along random tangents: (output, tangents, output tangent).
fn jvp_random(f: &F<'_>, inputs: &[Array], seed: u64) -> (Array, Vec<Array>, Array) {
    let ts: Vec<Array> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            rand(x.shape(), -1.0, 1.0, seed + i as u64)
                .astype(x.dtype())
                .unwrap()
        })
        .collect();
    let (outs, jt) = jvp(|xs| Ok(vec![f(xs)?]), inputs, &ts).unwrap();
    (outs[0].clone(), ts, jt[0].clone())
}

/// jvp against central differences along the tangent only.
fn check_fd(name: &str, f: &F<'_>, inputs: &[Array], tol: Tol) -> (Vec<Array>, Array) {
    let (y, ts, jt) = jvp_random(f, inputs, 1000);
    assert_eq!(jt.shape(), y.shape(), "{name}: tangent shape");
    assert_eq!(jt.dtype(), y.dtype(), "{name}: tangent dtype");
    let at = |s: f64| -> Vec<f64> {
        let xs: Vec<Array> = inputs
            .iter()
            .zip(&ts)
            .map(|(x, t)| {
                ops::add(
                    x,
                    &ops::multiply(t, &Array::scalar_of(s, x.dtype())).unwrap(),
                )
                .unwrap()
            })
            .collect();
        vals(&f(&xs).unwrap())
    };
    let (p, m) = (at(tol.h), at(-tol.h));
    let num: Vec<f64> = p
        .iter()
        .zip(&m)
        .map(|(a, b)| (a - b) / (2.0 * tol.h))
        .collect();
    assert_close(
        &format!("{name}: jvp vs finite differences"),
        &vals(&jt),
        &num,
        tol.fd,
    );
    (ts, jt)
}

/// jvp against finite differences and against the vjp (inner-product identity).
fn check_tol(name: &str, f: &F<'_>, inputs: &[Array], tol: Tol) {
    let (ts, jt) = check_fd(name, f, inputs, tol);
    let u = rand(jt.shape(), -1.0, 1.0, 2000)
        .astype(jt.dtype())
        .unwrap();
    let (_, jtu) = vjp(|xs| Ok(vec![f(xs)?]), inputs, std::slice::from_ref(&u)).unwrap();
    let l = dot(&jt, &u);
    let r: f64 = ts.iter().zip(&jtu).map(|(t, g)| dot(t, g)).sum();
    assert!(
        (l - r).abs() <= tol.ip * l.abs().max(r.abs()).max(1.0),
        "{name}: <J t, u> = {l} but <t, Jᵀ u> = {r}"
    );
}

fn check(name: &str, f: &F<'_>, inputs: &[Array]) {
    check_tol(name, f, inputs, T64)
}

/// Reverse mode against central differences, element by element (for the new scan VJPs).
fn check_grad(name: &str, f: &F<'_>, x: &Array) {
    let out = f(std::slice::from_ref(x)).unwrap();
    let w = rand(out.shape(), -1.0, 1.0, 99);
    let loss = |xs: &[Array]| -> Result<Array> {
        ops::sum(&ops::multiply(&f(xs)?, &w)?, Axes::All, false)
    };
    let g = vals(&grad(loss, std::slice::from_ref(x)).unwrap()[0]);
    let base = vals(x);
    let h = 1e-6;
    for j in 0..base.len() {
        let at = |d: f64| {
            let mut v = base.clone();
            v[j] += d;
            loss(&[Array::from_slice(&v, x.shape()).unwrap()])
                .unwrap()
                .item::<f64>()
                .unwrap()
        };
        let num = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (g[j] - num).abs() <= 1e-5 * num.abs().max(1.0),
            "{name}: d/dx[{j}] = {} but finite differences give {num}",
            g[j]
        );
    }
}

#[test]
fn unary_ops() {
    let x = rand(&[2, 3], -0.9, 0.9, 1);
    let pos = rand(&[2, 3], 0.2, 2.0, 2);
    let cases: Vec<(&str, fn(&Array) -> Result<Array>, &Array)> = vec![
        ("abs", ops::abs, &x),
        ("negative", ops::negative, &x),
        ("exp", ops::exp, &x),
        ("expm1", ops::expm1, &x),
        ("log", ops::log, &pos),
        ("log1p", ops::log1p, &pos),
        ("log2", ops::log2, &pos),
        ("log10", ops::log10, &pos),
        ("sqrt", ops::sqrt, &pos),
        ("rsqrt", ops::rsqrt, &pos),
        ("square", ops::square, &x),
        ("reciprocal", ops::reciprocal, &pos),
        ("sin", ops::sin, &x),
        ("cos", ops::cos, &x),
        ("tan", ops::tan, &x),
        ("tanh", ops::tanh, &x),
        ("sinh", ops::sinh, &x),
        ("cosh", ops::cosh, &x),
        ("arcsin", ops::arcsin, &x),
        ("arccos", ops::arccos, &x),
        ("arctan", ops::arctan, &x),
        ("sigmoid", ops::sigmoid, &x),
        ("erf", ops::erf, &x),
        ("erfinv", ops::erfinv, &x),
        // Piecewise constant: zero tangents (finite differences agree away from the steps).
        ("sign", ops::sign, &x),
        ("floor", ops::floor, &pos),
        ("ceil", ops::ceil, &pos),
        ("round", ops::round, &pos),
    ];
    for (name, f, input) in cases {
        check(name, &|xs: &[Array]| f(&xs[0]), std::slice::from_ref(input));
    }
    let (_, _, jt) = jvp_random(&|xs: &[Array]| ops::floor(&xs[0]), &[pos.clone()], 7);
    assert_eq!(vals(&jt), vec![0.0; 6]);
}

#[test]
fn binary_ops_with_broadcasting() {
    let a = rand(&[2, 3], 0.5, 2.0, 3);
    let b = rand(&[1, 3], 0.5, 2.0, 4);
    let cases: Vec<(&str, fn(&Array, &Array) -> Result<Array>)> = vec![
        ("add", ops::add),
        ("subtract", ops::subtract),
        ("multiply", ops::multiply),
        ("divide", ops::divide),
        ("power", ops::power),
        ("maximum", ops::maximum),
        ("minimum", ops::minimum),
        ("arctan2", ops::arctan2),
        ("logaddexp", ops::logaddexp),
        ("remainder", ops::remainder),
        ("floor_divide", ops::floor_divide),
    ];
    for (name, f) in cases {
        check(
            name,
            &|xs: &[Array]| f(&xs[0], &xs[1]),
            &[a.clone(), b.clone()],
        );
        // The smaller operand broadcast the other way, and a constant operand (no tangent).
        check(
            &format!("{name} (b, a)"),
            &|xs: &[Array]| f(&xs[0], &xs[1]),
            &[b.clone(), a.clone()],
        );
        check(
            &format!("{name} (x, const)"),
            &|xs: &[Array]| f(&xs[0], &b),
            &[a.clone()],
        );
    }
    let c = ops::greater(&a, &Array::scalar(1.0f64)).unwrap();
    check(
        "where",
        &|xs: &[Array]| ops::where_(&c, &xs[0], &xs[1]),
        &[a.clone(), b.clone()],
    );
    check(
        "where, y constant and larger",
        &|xs: &[Array]| ops::where_(&ops::slice_axis(&c, 0, 0, 1)?, &xs[0], &a),
        &[b.clone()],
    );
    check(
        "clip",
        &|xs: &[Array]| {
            ops::clip(
                &xs[0],
                Some(&Array::scalar(0.8f64)),
                Some(&Array::scalar(1.5f64)),
            )
        },
        &[a.clone()],
    );
    // Comparisons and bitwise ops: no tangent (zeros, at least float32).
    let (_, t) = jvp(
        |xs| Ok(vec![ops::less(&xs[0], &xs[1])?]),
        &[a.clone(), b.clone()],
        &[ops::ones_like(&a).unwrap(), ops::ones_like(&b).unwrap()],
    )
    .unwrap();
    assert_eq!((t[0].dtype(), vals(&t[0])), (Dtype::F32, vec![0.0; 6]));
}

#[test]
fn maximum_and_minimum_ties_split_the_tangent_as_the_vjp_does() {
    let a = Array::from_slice(&[1.0f64, 2.0, 3.0], &[3]).unwrap();
    let b = Array::from_slice(&[1.0f64, 5.0, 0.0], &[3]).unwrap();
    let ta = Array::from_slice(&[2.0f64, 2.0, 2.0], &[3]).unwrap();
    let tb = Array::from_slice(&[4.0f64, 4.0, 4.0], &[3]).unwrap();
    let (_, t) = jvp(
        |xs| Ok(vec![ops::maximum(&xs[0], &xs[1])?]),
        &[a.clone(), b.clone()],
        &[ta.clone(), tb.clone()],
    )
    .unwrap();
    assert_eq!(vals(&t[0]), vec![3.0, 4.0, 2.0]);
    let (_, t) = jvp(
        |xs| Ok(vec![ops::minimum(&xs[0], &xs[1])?]),
        &[a.clone(), b.clone()],
        &[ta, tb],
    )
    .unwrap();
    assert_eq!(vals(&t[0]), vec![3.0, 2.0, 4.0]);
    // The identity holds at the tie too (a finite-difference check would not: not smooth there).
    let f = |xs: &[Array]| ops::maximum(&xs[0], &xs[1]);
    let (_, ts, jt) = jvp_random(&f, &[a.clone(), b.clone()], 5);
    let u = rand(&[3], -1.0, 1.0, 6);
    let (_, g) = vjp(|xs| Ok(vec![f(xs)?]), &[a, b], std::slice::from_ref(&u)).unwrap();
    let (l, r) = (dot(&jt, &u), dot(&ts[0], &g[0]) + dot(&ts[1], &g[1]));
    assert!((l - r).abs() < 1e-12, "{l} vs {r}");
}

#[test]
fn dtype_casts_copies_and_stop_gradient() {
    let x = rand(&[2, 3], -1.0, 1.0, 8);
    // (f32 in, f64 out: finite differences in f64 would see f32 rounding steps.)
    check_tol(
        "astype f32 to f64",
        &|xs: &[Array]| ops::square(&xs[0].astype(Dtype::F64)?),
        &[randf(&[2, 3], -1.0, 1.0, 7)],
        T32,
    );
    check(
        "copy (contiguous of a transpose)",
        &|xs: &[Array]| ops::contiguous(&ops::transpose(&xs[0], None)?),
        &[x.clone()],
    );
    // The f32 tangent of an f32 cast.
    let t = rand(&[2, 3], -1.0, 1.0, 9);
    let (_, jt) = jvp(
        |xs| Ok(vec![xs[0].astype(Dtype::F32)?]),
        &[x.clone()],
        &[t.clone()],
    )
    .unwrap();
    assert_eq!(jt[0].dtype(), Dtype::F32);
    assert_close("astype", &vals(&jt[0]), &vals(&t), 1e-7);
    // To integers: no tangent.
    let (_, jt) = jvp(
        |xs| Ok(vec![xs[0].astype(Dtype::I32)?]),
        &[x.clone()],
        &[t.clone()],
    )
    .unwrap();
    assert_eq!(vals(&jt[0]), vec![0.0; 6]);
    // x * stop_gradient(x): tangent t * x, not 2 t x.
    let (_, jt) = jvp(
        |xs| Ok(vec![ops::multiply(&xs[0], &ops::stop_gradient(&xs[0])?)?]),
        &[x.clone()],
        &[t.clone()],
    )
    .unwrap();
    let want: Vec<f64> = vals(&x).iter().zip(vals(&t)).map(|(a, b)| a * b).collect();
    assert_close("stop_gradient", &vals(&jt[0]), &want, 1e-15);
}

#[test]
fn reductions_and_normalisations() {
    let x = rand(&[3, 4], 0.5, 2.0, 10);
    let x3 = rand(&[2, 3, 4], 0.5, 1.5, 11);
    let cases: Vec<(&str, Box<F<'_>>, &Array)> = vec![
        ("sum", Box::new(|xs| ops::sum(&xs[0], 1, false)), &x),
        (
            "sum all",
            Box::new(|xs| ops::sum(&xs[0], Axes::All, true)),
            &x,
        ),
        ("mean", Box::new(|xs| ops::mean(&xs[0], 0, false)), &x),
        ("prod", Box::new(|xs| ops::prod(&xs[0], 1, false)), &x),
        (
            "prod over two axes",
            Box::new(|xs| ops::prod(&xs[0], Axes::Some(vec![0, 2]), true)),
            &x3,
        ),
        ("max", Box::new(|xs| ops::max(&xs[0], 0, true)), &x),
        (
            "min all",
            Box::new(|xs| ops::min(&xs[0], Axes::All, false)),
            &x,
        ),
        (
            "max over two axes",
            Box::new(|xs| ops::max(&xs[0], Axes::Some(vec![1, 2]), false)),
            &x3,
        ),
        ("var", Box::new(|xs| ops::var(&xs[0], 1, false, 1)), &x),
        (
            "std",
            Box::new(|xs| ops::std(&xs[0], Axes::All, false, 0)),
            &x,
        ),
        (
            "logsumexp",
            Box::new(|xs| ops::logsumexp(&xs[0], 1, false)),
            &x,
        ),
        ("softmax fused", Box::new(|xs| ops::softmax(&xs[0], -1)), &x),
        ("softmax axis 0", Box::new(|xs| ops::softmax(&xs[0], 0)), &x),
        (
            "log_softmax",
            Box::new(|xs| ops::log_softmax(&xs[0], -1)),
            &x,
        ),
    ];
    for (name, f, input) in &cases {
        check(name, f.as_ref(), std::slice::from_ref(*input));
    }
}

#[test]
fn prod_with_zeros_is_exact() {
    // Π over a row with one zero: d/dx_i is the product of the others (no division by x).
    let x = Array::from_slice(&[2.0f64, 0.0, 3.0, 0.0, 0.0, 5.0], &[2, 3]).unwrap();
    let t = Array::from_slice(&[1.0f64, 1.0, 1.0, 1.0, 1.0, 1.0], &[2, 3]).unwrap();
    let (_, jt) = jvp(
        |xs| Ok(vec![ops::prod(&xs[0], 1, false)?]),
        &[x.clone()],
        &[t],
    )
    .unwrap();
    // Row 0: 0*3 + 2*3 + 2*0 = 6; row 1: two zeros, so every term vanishes.
    assert_eq!(vals(&jt[0]), vec![6.0, 0.0]);
    check_fd(
        "prod with zeros",
        &|xs: &[Array]| ops::prod(&xs[0], 1, false),
        &[x],
        T64,
    );
}

fn scan_cases() -> Vec<(String, Box<F<'static>>)> {
    type Scan = fn(&Array, Option<isize>, bool, bool) -> Result<Array>;
    let scans: [(&str, Scan); 4] = [
        ("cumsum", ops::cumsum),
        ("cumprod", ops::cumprod),
        ("cummax", ops::cummax),
        ("cummin", ops::cummin),
    ];
    let mut cases: Vec<(String, Box<F<'static>>)> = Vec::new();
    for (name, s) in scans {
        for axis in [0isize, 1] {
            for reverse in [false, true] {
                for inclusive in [true, false] {
                    cases.push((
                        format!("{name} axis {axis} reverse {reverse} inclusive {inclusive}"),
                        // (An exclusive cummax starts at -inf: zero it, or finite
                        // differences give inf - inf.)
                        Box::new(move |xs: &[Array]| {
                            let y = s(&xs[0], Some(axis), reverse, inclusive)?;
                            ops::where_(&ops::isinf(&y)?, &Array::scalar(0.0f64), &y)
                        }),
                    ));
                }
            }
        }
    }
    cases
}

#[test]
fn scans_forward_and_reverse() {
    let x = rand(&[3, 5], -1.5, 1.5, 12);
    for (name, f) in scan_cases() {
        check(&name, f.as_ref(), std::slice::from_ref(&x));
    }
    // Over the flattened array.
    check(
        "cumprod flattened",
        &|xs: &[Array]| ops::cumprod(&xs[0], None, false, true),
        &[x.clone()],
    );
}

#[test]
fn new_scan_vjps_against_finite_differences() {
    let x = rand(&[3, 5], -1.5, 1.5, 13);
    for (name, f) in scan_cases() {
        check_grad(&name, f.as_ref(), &x);
    }
    // Zeros (one and two in a row) in cumprod: exact, no division by x.
    let z = Array::from_slice(
        &[
            0.5f64, 0.0, 2.0, -1.5, 3.0, 0.0, 1.2, 0.0, 0.7, -2.0, 1.1, 0.9, -0.8, 1.3, 0.0,
        ],
        &[3, 5],
    )
    .unwrap();
    for reverse in [false, true] {
        for inclusive in [true, false] {
            let f = move |xs: &[Array]| ops::cumprod(&xs[0], Some(1), reverse, inclusive);
            let name = format!("cumprod with zeros reverse {reverse} inclusive {inclusive}");
            check_grad(&name, &f, &z);
            check(&name, &f, std::slice::from_ref(&z));
        }
    }
    // Known values: d/dx sum(cumprod([2, 0, 3])) = [1 + 0 + 0, 2 + 2*3, 0] = [1, 8, 0].
    let v = Array::from_slice(&[2.0f64, 0.0, 3.0], &[3]).unwrap();
    let g = grad(
        |xs| {
            ops::sum(
                &ops::cumprod(&xs[0], Some(0), false, true)?,
                Axes::All,
                false,
            )
        },
        &[v],
    )
    .unwrap();
    assert_eq!(vals(&g[0]), vec![1.0, 8.0, 0.0]);
    // cummax ties: the gradient goes to the latest position that reached the running max.
    let v = Array::from_slice(&[1.0f64, 3.0, 3.0, 2.0], &[4]).unwrap();
    let g = grad(
        |xs| {
            ops::sum(
                &ops::cummax(&xs[0], Some(0), false, true)?,
                Axes::All,
                false,
            )
        },
        &[v.clone()],
    )
    .unwrap();
    assert_eq!(vals(&g[0]), vec![1.0, 1.0, 2.0, 0.0]);
    let (_, t) = jvp(
        |xs| Ok(vec![ops::cummax(&xs[0], Some(0), false, true)?]),
        &[v],
        &[Array::from_slice(&[10.0f64, 20.0, 30.0, 40.0], &[4]).unwrap()],
    )
    .unwrap();
    assert_eq!(vals(&t[0]), vec![10.0, 20.0, 30.0, 30.0]);
}

#[test]
fn shape_and_indexing_ops() {
    let x = rand(&[3, 4], -1.0, 1.0, 14);
    let y = rand(&[3, 2], -1.0, 1.0, 15);
    let idx = Array::from_slice(&[2i32, 0, 2, -1], &[4]).unwrap();
    let along = Array::from_slice(&[1u32, 0, 3, 3, 2, 0], &[3, 2]).unwrap();
    let put = Array::from_slice(&[1u32, 0, 3, 2, 2, 0], &[3, 2]).unwrap();
    let rows = Array::from_slice(&[0i32, 2, 0], &[3]).unwrap();
    let upd = rand(&[3, 4], -1.0, 1.0, 16);
    let r = Array::from_slice(&[2i32, 0], &[2]).unwrap();
    let c = Array::from_slice(&[1i32, 3], &[2]).unwrap();
    let one: Vec<(&str, Box<F<'_>>)> = vec![
        ("reshape", Box::new(|xs| ops::reshape(&xs[0], &[2, 6]))),
        ("transpose", Box::new(|xs| ops::transpose(&xs[0], None))),
        (
            "broadcast_to",
            Box::new(|xs| ops::broadcast_to(&xs[0], &[2, 3, 4])),
        ),
        (
            "slice with negative step",
            Box::new(|xs| ops::slice_opt(&xs[0], &[(None, None, -2), (Some(1), Some(4), 2)])),
        ),
        (
            "pad",
            Box::new(|xs| ops::pad(&xs[0], &[(1, 0), (0, 2)], ops::PadMode::Edge)),
        ),
        ("tile", Box::new(|xs| ops::tile(&xs[0], &[2, 1]))),
        ("repeat", Box::new(|xs| ops::repeat(&xs[0], 2, Some(1)))),
        ("roll", Box::new(|xs| ops::roll(&xs[0], 1, Some(1)))),
        (
            "split",
            Box::new(|xs| Ok(ops::split(&xs[0], ops::SplitAt::Indices(vec![1]), 1)?[1].clone())),
        ),
        ("take", Box::new(|xs| ops::take(&xs[0], &idx, Some(1)))),
        (
            "take flattened",
            Box::new(|xs| ops::take(&xs[0], &idx, None)),
        ),
        (
            "take_along_axis",
            Box::new(|xs| ops::take_along_axis(&xs[0], &along, Some(1))),
        ),
        (
            "gather",
            Box::new(|xs| ops::gather(&xs[0], &[r.clone(), c.clone()], &[0, 1])),
        ),
        ("sort", Box::new(|xs| ops::sort(&xs[0], Some(1)))),
        ("sort axis 0", Box::new(|xs| ops::sort(&xs[0], Some(0)))),
        ("topk", Box::new(|xs| ops::topk(&xs[0], 2, Some(1)))),
        ("tril", Box::new(|xs| ops::tril(&xs[0], 0))),
    ];
    for (name, f) in &one {
        check(name, f.as_ref(), std::slice::from_ref(&x));
    }
    let two: Vec<(&str, Box<F<'_>>, Vec<Array>)> = vec![
        (
            "concatenate",
            Box::new(|xs| ops::concatenate(&[xs[0].clone(), xs[1].clone()], 1)),
            vec![x.clone(), y.clone()],
        ),
        (
            "concatenate with a constant",
            Box::new(|xs| ops::concatenate(&[y.clone(), xs[0].clone(), y.clone()], 1)),
            vec![x.clone()],
        ),
        (
            "stack",
            Box::new(|xs| ops::stack(&[xs[0].clone(), xs[1].clone()], 0)),
            vec![x.clone(), upd.clone()],
        ),
        (
            "put_along_axis",
            Box::new(|xs| ops::put_along_axis(&xs[0], &put, &xs[1], 1)),
            vec![x.clone(), y.clone()],
        ),
        (
            "put_along_axis, values constant",
            Box::new(|xs| ops::put_along_axis(&xs[0], &put, &y, 1)),
            vec![x.clone()],
        ),
        (
            "put_along_axis, array constant",
            Box::new(|xs| ops::put_along_axis(&x, &put, &xs[0], 1)),
            vec![y.clone()],
        ),
        (
            "scatter_add",
            Box::new(|xs| ops::scatter_add(&xs[0], &rows, &xs[1], 0)),
            vec![x.clone(), upd.clone()],
        ),
        (
            "slice_update",
            Box::new(|xs| ops::slice_update(&xs[0], &xs[1], &[0, 1], &[3, 3], &[1, 1])),
            vec![x.clone(), y.clone()],
        ),
        (
            "slice_update, update constant",
            Box::new(|xs| ops::slice_update(&xs[0], &y, &[0, 1], &[3, 3], &[1, 1])),
            vec![x.clone()],
        ),
        (
            "slice_update, array constant",
            Box::new(|xs| ops::slice_update(&x, &xs[0], &[0, 1], &[3, 3], &[1, 1])),
            vec![y.clone()],
        ),
    ];
    for (name, f, inputs) in &two {
        check(name, f.as_ref(), inputs);
    }
    // Index outputs carry no tangent.
    for (name, f) in [
        (
            "argmax",
            Box::new(|xs: &[Array]| ops::argmax(&xs[0], Some(1), false)) as Box<F<'_>>,
        ),
        (
            "argsort",
            Box::new(|xs: &[Array]| ops::argsort(&xs[0], Some(1))),
        ),
    ] {
        let (y, _, t) = jvp_random(f.as_ref(), std::slice::from_ref(&x), 3);
        assert_eq!(t.shape(), y.shape(), "{name}");
        assert!(vals(&t).iter().all(|&v| v == 0.0), "{name}");
    }
}

#[test]
fn linear_algebra() {
    let a = rand(&[2, 3, 4], -1.0, 1.0, 17);
    let b = rand(&[4, 5], -1.0, 1.0, 18);
    let v = rand(&[4], -1.0, 1.0, 19);
    let w = rand(&[5], -1.0, 1.0, 20);
    let mm = |xs: &[Array]| ops::matmul(&xs[0], &xs[1]);
    check(
        "batched matmul with broadcast",
        &mm,
        &[a.clone(), b.clone()],
    );
    check("matrix @ vector", &mm, &[b.clone(), w.clone()]);
    check("vector @ matrix", &mm, &[v.clone(), b.clone()]);
    check(
        "matmul, constant right",
        &|xs: &[Array]| ops::matmul(&xs[0], &b),
        &[a.clone()],
    );
    check(
        "einsum",
        &|xs: &[Array]| ops::einsum("bij,jk->bik", &[xs[0].clone(), xs[1].clone()]),
        &[a.clone(), b.clone()],
    );
    check(
        "outer",
        &|xs: &[Array]| ops::outer(&xs[0], &xs[1]),
        &[v.clone(), w.clone()],
    );
}

#[test]
fn fast_ops_in_f32() {
    // RmsNorm, Rope and Sdpa are primitives only in f32 (f64 takes the composite), so their
    // rules are checked in f32, and against the jvp of the f64 composite.
    let x = randf(&[2, 3, 8], -1.0, 1.0, 21);
    let w = randf(&[8], 0.5, 1.5, 22);
    check_tol(
        "rms_norm",
        &|xs: &[Array]| ops::rms_norm(&xs[0], Some(&xs[1]), 1e-5),
        &[x.clone(), w.clone()],
        T32,
    );
    check_tol(
        "rms_norm without weight",
        &|xs: &[Array]| ops::rms_norm(&xs[0], None, 1e-5),
        &[x.clone()],
        T32,
    );
    let b = randf(&[8], -0.5, 0.5, 25);
    check_tol(
        "layer_norm",
        &|xs: &[Array]| ops::layer_norm(&xs[0], Some(&xs[1]), Some(&xs[2]), 1e-5),
        &[x.clone(), w.clone(), b.clone()],
        T32,
    );
    check_tol(
        "layer_norm with bias only",
        &|xs: &[Array]| ops::layer_norm(&xs[0], None, Some(&xs[1]), 1e-5),
        &[x.clone(), b.clone()],
        T32,
    );
    // (t, heads, d) = (3, 2, 8) with r = 3 (a tail of 2 passes through).
    let xr = randf(&[1, 3, 2, 8], -1.0, 1.0, 23);
    let ang = randf(&[3, 3], -2.0, 2.0, 24);
    let (cos, sin) = (ops::cos(&ang).unwrap(), ops::sin(&ang).unwrap());
    for interleaved in [false, true] {
        check_tol(
            &format!("rope interleaved {interleaved}"),
            &|xs: &[Array]| ops::rope(&xs[0], &cos, &sin, interleaved),
            &[xr.clone()],
            T32,
        );
        // Tables as arguments too: both modes differentiate them.
        check_tol(
            &format!("rope with tables interleaved {interleaved}"),
            &|xs: &[Array]| ops::rope(&xs[0], &xs[1], &xs[2], interleaved),
            &[xr.clone(), cos.clone(), sin.clone()],
            T32,
        );
    }
    // Grouped-query attention (4 heads over 2 kv heads) with a mask.
    let q = randf(&[1, 4, 3, 4], -1.0, 1.0, 25);
    let k = randf(&[1, 2, 5, 4], -1.0, 1.0, 26);
    let v = randf(&[1, 2, 5, 4], -1.0, 1.0, 27);
    let mask = randf(&[3, 5], -1.0, 0.0, 28);
    check_tol(
        "sdpa",
        &|xs: &[Array]| ops::sdpa(&xs[0], &xs[1], &xs[2], 0.5, Some(&mask)),
        &[q.clone(), k.clone(), v.clone()],
        T32,
    );
    check_tol(
        "sdpa without mask",
        &|xs: &[Array]| ops::sdpa(&xs[0], &xs[1], &xs[2], 0.5, None),
        &[q.clone(), k.clone(), v.clone()],
        T32,
    );
    check_tol(
        "sdpa with the mask differentiated",
        &|xs: &[Array]| ops::sdpa(&xs[0], &xs[1], &xs[2], 0.5, Some(&xs[3])),
        &[q.clone(), k.clone(), v.clone(), mask.clone()],
        T32,
    );
    // The f32 primitives' tangents against the f64 composites' (other rules entirely).
    let f64s =
        |a: &[Array]| -> Vec<Array> { a.iter().map(|x| x.astype(Dtype::F64).unwrap()).collect() };
    let pairs: Vec<(&str, Box<F<'_>>, Vec<Array>)> = vec![
        (
            "rms_norm",
            Box::new(|xs| ops::rms_norm(&xs[0], Some(&xs[1]), 1e-5)),
            vec![x.clone(), w.clone()],
        ),
        (
            "layer_norm",
            Box::new(|xs| ops::layer_norm(&xs[0], Some(&xs[1]), Some(&xs[2]), 1e-5)),
            vec![x.clone(), w.clone(), b.clone()],
        ),
        (
            "rope",
            Box::new(|xs| ops::rope(&xs[0], &xs[1], &xs[2], false)),
            vec![xr.clone(), cos.clone(), sin.clone()],
        ),
        (
            "sdpa",
            Box::new(|xs| ops::sdpa(&xs[0], &xs[1], &xs[2], 0.5, Some(&xs[3]))),
            vec![q.clone(), k.clone(), v.clone(), mask.clone()],
        ),
    ];
    for (name, f, inputs) in &pairs {
        let (_, _, t32) = jvp_random(f.as_ref(), inputs, 40);
        let (_, _, t64) = jvp_random(f.as_ref(), &f64s(inputs), 40);
        assert_close(
            &format!("{name}: f32 primitive vs f64 composite"),
            &vals(&t32),
            &vals(&t64),
            1e-4,
        );
    }
}

/// Q8_0 blocks (an f16 scale and 32 signed bytes) for an (n, k) matrix.
fn q8_0_weight(n: usize, k: usize, seed: u64) -> Array {
    let mut bytes = Vec::new();
    let mut s = seed;
    for _ in 0..n * k / 32 {
        bytes.extend_from_slice(&tessera_core::half::f16::from_f32(0.01).to_le_bytes());
        for _ in 0..32 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            bytes.push((s >> 56) as u8);
        }
    }
    Array::from_slice(&bytes, &[n, k / 32 * 34]).unwrap()
}

#[test]
fn quantized_products() {
    use tessera_core::quant::GgmlType;
    // GGUF: the kernel rounds x to 8 bits, so no finite differences; the tangent is the ideal
    // product's, t @ Wᵀ with W decoded, and the transpose of the vjp.
    let w = q8_0_weight(3, 64, 5);
    let x = randf(&[2, 64], -1.0, 1.0, 29);
    let t = randf(&[2, 64], -1.0, 1.0, 30);
    let f = |xs: &[Array]| ops::gguf_matmul(&xs[0], &w, GgmlType::Q8_0);
    let (_, jt) = jvp(|xs| Ok(vec![f(xs)?]), &[x.clone()], &[t.clone()]).unwrap();
    let dense = ops::gguf_dequantize(&w, GgmlType::Q8_0, 64).unwrap();
    let want = ops::matmul(&t, &ops::transpose(&dense, None).unwrap()).unwrap();
    assert_close("gguf_matmul", &vals(&jt[0]), &vals(&want), 1e-5);
    let u = randf(&[2, 3], -1.0, 1.0, 31);
    let (_, g) = vjp(
        |xs| Ok(vec![f(xs)?]),
        &[x.clone()],
        std::slice::from_ref(&u),
    )
    .unwrap();
    let (l, r) = (dot(&jt[0], &u), dot(&t, &g[0]));
    assert!((l - r).abs() < 1e-4 * l.abs().max(1.0), "{l} vs {r}");

    // Affine: linear in x, and in (scales, biases) jointly; the packed words are constants.
    let dense = randf(&[4, 64], -1.0, 1.0, 32);
    let (wq, s, b) = ops::quantize(&dense, 32, 4).unwrap();
    let xa = randf(&[2, 64], -1.0, 1.0, 33);
    check_tol(
        "affine quantized_matmul (x, scales, biases)",
        &|xs: &[Array]| ops::quantized_matmul(&xs[0], &wq, &xs[1], &xs[2], true, 32, 4),
        &[xa.clone(), s.clone(), b.clone()],
        T32,
    );
    let xt = randf(&[2, 4], -1.0, 1.0, 34);
    check_tol(
        "affine quantized_matmul, transpose false",
        &|xs: &[Array]| ops::quantized_matmul(&xs[0], &wq, &xs[1], &xs[2], false, 32, 4),
        &[xt, s.clone(), b.clone()],
        T32,
    );
    check_tol(
        "affine dequantize (scales, biases)",
        &|xs: &[Array]| ops::dequantize(&wq, &xs[0], &xs[1], 32, 4),
        &[s.clone(), b.clone()],
        T32,
    );
}

/// A two-rank group whose other rank always holds exactly what this rank holds (an SPMD program
/// on identical data): enough to run collectives and their derivatives in one process.
struct Mirror;

fn map_f(dtype: Dtype, data: &mut [u8], f: impl Fn(f64) -> f64) {
    match dtype {
        Dtype::F64 => {
            for c in data.chunks_exact_mut(8) {
                let v = f(f64::from_le_bytes(c.try_into().unwrap()));
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        Dtype::F32 => {
            for c in data.chunks_exact_mut(4) {
                let v = f(f32::from_le_bytes(c.try_into().unwrap()) as f64) as f32;
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        other => panic!("mirror group: {other}"),
    }
}

impl Communicator for Mirror {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        2
    }
    fn backend(&self) -> &str {
        "mirror"
    }
    fn all_reduce(&self, op: CollectiveReduce, dtype: Dtype, data: &mut [u8]) -> Result<()> {
        if op == CollectiveReduce::Sum {
            map_f(dtype, data, |v| 2.0 * v);
        }
        Ok(())
    }
    fn all_gather(&self, input: &[u8], output: &mut [u8]) -> Result<()> {
        output[..input.len()].copy_from_slice(input);
        output[input.len()..].copy_from_slice(input);
        Ok(())
    }
    fn reduce_scatter(
        &self,
        _op: CollectiveReduce,
        dtype: Dtype,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<()> {
        output.copy_from_slice(&input[..output.len()]);
        map_f(dtype, output, |v| 2.0 * v);
        Ok(())
    }
    fn send(&self, _data: &[u8], _dst: usize) -> Result<()> {
        Ok(())
    }
    fn recv(&self, _data: &mut [u8], _src: usize) -> Result<()> {
        Ok(())
    }
}

#[test]
fn collectives() {
    let g = GroupRef(Arc::new(Mirror));
    let x = rand(&[4, 3], -1.0, 1.0, 35);
    // Element-wise reductions: the identity holds rank by rank when the ranks mirror each other.
    check(
        "all_sum",
        &|xs: &[Array]| ops::multiply(&ops::all_sum(&xs[0], &g)?, &xs[0]),
        &[x.clone()],
    );
    check(
        "all_max",
        &|xs: &[Array]| ops::sin(&ops::all_max(&xs[0], &g)?),
        &[x.clone()],
    );
    check(
        "all_min",
        &|xs: &[Array]| ops::all_min(&ops::exp(&xs[0])?, &g),
        &[x.clone()],
    );
    // Gathers and scatters move blocks between ranks, so <J t, u> only balances summed over
    // ranks: finite differences only.
    check_fd(
        "all_gather",
        &|xs: &[Array]| ops::all_gather(&ops::square(&xs[0])?, &g),
        &[x.clone()],
        T64,
    );
    check_fd(
        "sum_scatter",
        &|xs: &[Array]| ops::sum_scatter(&ops::square(&xs[0])?, &g),
        &[x.clone()],
        T64,
    );
    // Point-to-point messages are differentiated by the walks themselves, which send the
    // tangent along (run between processes in tessera-distributed's tests); here only the
    // lazily built tangent of a send is checked: x's own tangent, in x's shape.
    let (_, ts) = jvp(
        |xs| Ok(vec![ops::send(&xs[0], 1, &g)?]),
        &[x.clone()],
        &[x.clone()],
    )
    .unwrap();
    assert_eq!(ts[0].shape(), x.shape());
}

#[test]
fn jvp_of_jvp_gives_second_and_third_derivatives() {
    let x = rand(&[6], 0.3, 1.5, 36);
    let xv = vals(&x);
    type Fx = fn(&Array) -> Result<Array>;
    let cube: Fx = |a| ops::power(a, &Array::scalar(3.0f64));
    let gauss: Fx = |a| ops::exp(&ops::square(a)?);
    let cases: Vec<(&str, Fx, fn(f64) -> f64)> = vec![
        ("sin", ops::sin, |x| -x.sin()),
        ("x^3", cube, |x| 6.0 * x),
        ("exp(x^2)", gauss, |x| (2.0 + 4.0 * x * x) * (x * x).exp()),
        ("log", ops::log, |x| -1.0 / (x * x)),
        ("tanh", ops::tanh, |x| {
            let t = x.tanh();
            -2.0 * t * (1.0 - t * t)
        }),
        (
            "cumprod",
            |a| ops::cumprod(a, Some(0), false, true),
            |_| f64::NAN,
        ),
    ];
    let ones = ops::ones_like(&x).unwrap();
    for (name, f, d2) in cases {
        let first = |xs: &[Array]| -> Result<Vec<Array>> {
            Ok(jvp(|a| Ok(vec![f(&a[0])?]), xs, std::slice::from_ref(&ones))?.1)
        };
        let (_, second) =
            jvp(first, std::slice::from_ref(&x), std::slice::from_ref(&ones)).unwrap();
        if name == "cumprod" {
            // y_k = Π_{j<=k} x_j along all-ones: d²y_k = Σ_{i≠j<=k} Π_{others}.
            let want: Vec<f64> = (0..xv.len())
                .map(|k| {
                    let mut s = 0.0;
                    for i in 0..=k {
                        for j in 0..=k {
                            if i != j {
                                s += (0..=k)
                                    .filter(|&m| m != i && m != j)
                                    .map(|m| xv[m])
                                    .product::<f64>();
                            }
                        }
                    }
                    s
                })
                .collect();
            assert_close(name, &vals(&second[0]), &want, 1e-12);
        } else {
            let want: Vec<f64> = xv.iter().map(|&v| d2(v)).collect();
            assert_close(name, &vals(&second[0]), &want, 1e-12);
        }
    }
    // Third derivative of sin: -cos.
    let d1 = |xs: &[Array]| -> Result<Vec<Array>> {
        Ok(jvp(
            |a| Ok(vec![ops::sin(&a[0])?]),
            xs,
            std::slice::from_ref(&ones),
        )?
        .1)
    };
    let d2 =
        |xs: &[Array]| -> Result<Vec<Array>> { Ok(jvp(d1, xs, std::slice::from_ref(&ones))?.1) };
    let (_, d3) = jvp(d2, std::slice::from_ref(&x), std::slice::from_ref(&ones)).unwrap();
    let want: Vec<f64> = xv.iter().map(|v| -v.cos()).collect();
    assert_close("sin'''", &vals(&d3[0]), &want, 1e-12);
}

#[test]
fn hessian_vector_products_forward_over_reverse_and_reverse_over_forward() {
    let x = rand(&[5], -1.0, 1.0, 37);
    let v = rand(&[5], -1.0, 1.0, 38);
    let (xv, vv) = (vals(&x), vals(&v));
    type Fs = fn(&Array) -> Result<Array>;
    // f(x) = Σ x³ + sin x: H = diag(6x - sin x).
    let poly: Fs = |a| {
        ops::sum(
            &ops::add(&ops::power(a, &Array::scalar(3.0f64))?, &ops::sin(a)?)?,
            Axes::All,
            false,
        )
    };
    // f(x) = logsumexp(x): H = diag(p) - p pᵀ.
    let lse: Fs = |a| ops::logsumexp(a, Axes::All, false);
    let p: Vec<f64> = {
        let e: Vec<f64> = xv.iter().map(|v| v.exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    };
    let pv: f64 = p.iter().zip(&vv).map(|(a, b)| a * b).sum();
    let cases: Vec<(&str, Fs, Vec<f64>)> = vec![
        (
            "poly",
            poly,
            xv.iter()
                .zip(&vv)
                .map(|(x, v)| (6.0 * x - x.sin()) * v)
                .collect(),
        ),
        (
            "logsumexp",
            lse,
            p.iter().zip(&vv).map(|(p, v)| p * v - p * pv).collect(),
        ),
    ];
    for (name, f, want) in cases {
        // jvp of grad.
        let (_, hv) = jvp(
            |xs| grad(|a| f(&a[0]), xs),
            std::slice::from_ref(&x),
            std::slice::from_ref(&v),
        )
        .unwrap();
        assert_close(&format!("{name}: jvp of vjp"), &vals(&hv[0]), &want, 1e-12);
        // grad of jvp.
        let hv = grad(
            |xs| {
                let (_, t) = jvp(|a| Ok(vec![f(&a[0])?]), xs, std::slice::from_ref(&v))?;
                Ok(t[0].clone())
            },
            std::slice::from_ref(&x),
        )
        .unwrap();
        assert_close(&format!("{name}: vjp of jvp"), &vals(&hv[0]), &want, 1e-12);
    }
}

/// A function touching many rules at once (scans, reductions, indexing, softmax, where).
fn mixed(x: &Array) -> Result<Array> {
    let a = ops::cumprod(x, Some(-1), false, true)?;
    let b = ops::cummax(&ops::sin(x)?, Some(-1), true, true)?;
    let c = ops::softmax(x, -1)?;
    let d = ops::take(x, &Array::from_slice(&[2i32, 0], &[2]).unwrap(), Some(-1))?;
    let m = ops::sum(&ops::multiply(&d, &d)?, -1, true)?;
    let e = ops::where_(&ops::greater(x, &Array::scalar(0.0f64))?, &c, &b)?;
    ops::add(
        &ops::add(&a, &e)?,
        &ops::multiply(&m, &ops::sort(x, Some(-1))?)?,
    )
}

#[test]
fn vmap_of_jvp_matches_stacking() {
    let xs = rand(&[4, 5], -1.0, 1.0, 39);
    let ts = rand(&[4, 5], -1.0, 1.0, 40);
    let batched = vmap(
        |a| Ok(jvp(|x| Ok(vec![mixed(&x[0])?]), &a[..1], &a[1..])?.1),
        &[xs.clone(), ts.clone()],
        &[Some(0), Some(0)],
        &[0],
    )
    .unwrap();
    let mut want = Vec::new();
    for i in 0..4 {
        let x = ops::reshape(&ops::slice_axis(&xs, 0, i, i + 1).unwrap(), &[5]).unwrap();
        let t = ops::reshape(&ops::slice_axis(&ts, 0, i, i + 1).unwrap(), &[5]).unwrap();
        let (_, jt) = jvp(|a| Ok(vec![mixed(&a[0])?]), &[x], &[t]).unwrap();
        want.extend(vals(&jt[0]));
    }
    assert_eq!(batched[0].shape(), &[4, 5]);
    assert_close("vmap of jvp", &vals(&batched[0]), &want, 1e-12);
    // And the mixed function's jvp is right in the first place.
    check("mixed", &|a: &[Array]| mixed(&a[0]), &[xs]);
}

#[test]
fn compile_of_jvp_and_jvp_of_compiled() {
    let f = |x: &Array| -> Result<Array> {
        let y = ops::tanh(&ops::add(&ops::multiply(x, x)?, x)?)?;
        ops::add(&ops::multiply(&y, &ops::exp(x)?)?, &ops::sum(&y, -1, true)?)
    };
    let x = randf(&[3, 8], -1.0, 1.0, 41);
    let t = randf(&[3, 8], -1.0, 1.0, 42);
    let (_, plain) = jvp(|a| Ok(vec![f(&a[0])?]), &[x.clone()], &[t.clone()]).unwrap();
    // compile(jvp(f)).
    let cj = compile(|a: &[Array]| Ok(jvp(|b| Ok(vec![f(&b[0])?]), &a[..1], &a[1..])?.1));
    assert!(cj.fused_kernels(&[x.clone(), t.clone()]).unwrap() > 0);
    let got = cj.call(&[x.clone(), t.clone()]).unwrap();
    assert_close("compile of jvp", &vals(&got[0]), &vals(&plain[0]), 1e-6);
    // compile of a Hessian-vector product (forward over reverse).
    let loss = |x: &Array| ops::sum(&f(x)?, Axes::All, false);
    let hvp = |a: &[Array]| Ok(jvp(|b| grad(|c| loss(&c[0]), b), &a[..1], &a[1..])?.1);
    let want = hvp(&[x.clone(), t.clone()]).unwrap();
    let got = compile(hvp).call(&[x.clone(), t.clone()]).unwrap();
    assert_close(
        "compile of jvp of grad",
        &vals(&got[0]),
        &vals(&want[0]),
        1e-5,
    );
    // jvp(compile(f)): the fused nodes are differentiated through their expansion.
    let cf = compile(|a: &[Array]| Ok(vec![f(&a[0])?]));
    assert!(cf.fused_kernels(std::slice::from_ref(&x)).unwrap() > 0);
    let (_, got) = jvp(|a| cf.call(a), &[x.clone()], &[t.clone()]).unwrap();
    assert_close("jvp of compiled", &vals(&got[0]), &vals(&plain[0]), 1e-6);
    // And in f64 (nothing fuses, but the compiled graph is still the one differentiated).
    let x64 = x.astype(Dtype::F64).unwrap();
    check(
        "jvp of compiled f64",
        &|a: &[Array]| Ok(cf.call(a)?[0].clone()),
        &[x64],
    );
}

#[test]
fn fused_nodes_have_a_forward_rule() {
    // Fused f32 chains (with a trailing row sum) under jvp, against finite differences and the
    // vjp of the same compiled function.
    let cf = compile(|a: &[Array]| {
        let y = ops::sigmoid(&ops::subtract(&ops::multiply(&a[0], &a[1])?, &a[0])?)?;
        Ok(vec![ops::sum(&ops::multiply(&y, &y)?, -1, true)?])
    });
    let x = randf(&[4, 16], -1.0, 1.0, 43);
    let y = randf(&[4, 16], -1.0, 1.0, 44);
    assert!(cf.fused_kernels(&[x.clone(), y.clone()]).unwrap() > 0);
    check_tol(
        "fused",
        &|a: &[Array]| Ok(cf.call(a)?[0].clone()),
        &[x, y],
        T32,
    );
}

#[test]
fn custom_rules_are_used() {
    let x = rand(&[4], -1.0, 1.0, 45);
    let t = rand(&[4], -1.0, 1.0, 46);
    let tv = vals(&t);
    // A deliberately wrong rule (3 t instead of cos(x) t) proves the user's jvp is called, in
    // forward mode and, transposed, in reverse mode.
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let odd = custom_jvp(
        |x: &[Array]| ops::sin(&x[0]),
        move |_x, _y, t| {
            c2.fetch_add(1, Ordering::SeqCst);
            ops::multiply(&t[0], &Array::scalar(3.0f64))
        },
    );
    let (y, jt) = jvp(|a| Ok(vec![odd(a)?]), &[x.clone()], &[t.clone()]).unwrap();
    assert_close(
        "custom_jvp value",
        &vals(&y[0]),
        &vals(&ops::sin(&x).unwrap()),
        1e-15,
    );
    assert_close(
        "custom_jvp",
        &vals(&jt[0]),
        &tv.iter().map(|v| 3.0 * v).collect::<Vec<_>>(),
        1e-15,
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let g = grad(|a| ops::sum(&odd(a)?, Axes::All, false), &[x.clone()]).unwrap();
    assert_eq!(vals(&g[0]), vec![3.0; 4]);

    // custom_vjp: forward mode follows the user's vjp (straight-through: identity), not the
    // true derivative of round (zero).
    let ste = custom_vjp(
        |x: &[Array]| ops::round(&x[0]),
        |_x, _y, ct| Ok(vec![ct.clone()]),
    );
    let (_, jt) = jvp(|a| Ok(vec![ste(a)?]), &[x.clone()], &[t.clone()]).unwrap();
    assert_close("custom_vjp under jvp", &vals(&jt[0]), &tv, 1e-15);

    // Both rules: each mode uses its own.
    let both = CustomFunction::new(|x: &[Array]| ops::multiply(&x[0], &x[1]))
        .name("both")
        .vjp(|x, _y, ct| {
            Ok(vec![
                ops::multiply(ct, &Array::scalar(2.0f64))?,
                ops::zeros_like(&x[1])?,
            ])
        })
        .jvp(|_x, _y, t| ops::multiply(&t[0], &Array::scalar(5.0f64)))
        .build();
    let z = rand(&[4], -1.0, 1.0, 47);
    let (_, jt) = jvp(
        |a| Ok(vec![both(a)?]),
        &[x.clone(), z.clone()],
        &[t.clone(), t.clone()],
    )
    .unwrap();
    assert_close(
        "jvp rule",
        &vals(&jt[0]),
        &tv.iter().map(|v| 5.0 * v).collect::<Vec<_>>(),
        1e-15,
    );
    let g = grad(
        |a| ops::sum(&both(a)?, Axes::All, false),
        &[x.clone(), z.clone()],
    )
    .unwrap();
    assert_eq!((vals(&g[0]), vals(&g[1])), (vec![2.0; 4], vec![0.0; 4]));

    // No rule: forward mode through the forward.
    let plain = CustomFunction::new(|x: &[Array]| ops::sin(&x[0])).build();
    check(
        "custom without rules",
        &|a: &[Array]| plain(a),
        &[x.clone()],
    );

    // A custom jvp rule is differentiable again: softplus with sigmoid as its derivative.
    let softplus = custom_jvp(
        |x: &[Array]| ops::logaddexp(&x[0], &Array::scalar(0.0f64)),
        |x, _y, t| ops::multiply(&ops::sigmoid(&x[0])?, &t[0]),
    );
    let ones = ops::ones_like(&x).unwrap();
    let first = |xs: &[Array]| -> Result<Vec<Array>> {
        Ok(jvp(|a| Ok(vec![softplus(a)?]), xs, std::slice::from_ref(&ones))?.1)
    };
    let (_, second) = jvp(first, std::slice::from_ref(&x), std::slice::from_ref(&ones)).unwrap();
    let want: Vec<f64> = vals(&x)
        .iter()
        .map(|v| {
            let s = 1.0 / (1.0 + (-v).exp());
            s * (1.0 - s)
        })
        .collect();
    assert_close("jvp of custom_jvp", &vals(&second[0]), &want, 1e-12);
    check(
        "custom_jvp softplus",
        &|a: &[Array]| softplus(a),
        &[x.clone()],
    );

    // A rule returning the wrong shape is an error naming the op.
    let bad = CustomFunction::new(|x: &[Array]| ops::sin(&x[0]))
        .name("bad_rule")
        .jvp(|_x, _y, _t| ops::zeros(&[2], Dtype::F64))
        .build();
    let e = jvp(|a| Ok(vec![bad(a)?]), &[x.clone()], &[t.clone()])
        .err()
        .expect("wrong shape");
    assert!(format!("{e}").contains("bad_rule"), "{e}");
}

#[test]
fn checkpoint_under_jvp() {
    let chain = |x: &Array| -> Result<Array> {
        let mut y = x.clone();
        for _ in 0..3 {
            y = ops::sin(&ops::multiply(&y, &Array::scalar(1.1f64))?)?;
        }
        Ok(y)
    };
    let block = checkpoint(move |xs: &[Array]| chain(&xs[0]));
    let x = rand(&[5], -1.0, 1.0, 48);
    let v = rand(&[5], -1.0, 1.0, 49);
    let twice = |xs: &[Array]| block(&[block(xs)?]);
    let plain = |xs: &[Array]| chain(&chain(&xs[0])?);
    let (_, a) = jvp(|xs| Ok(vec![twice(xs)?]), &[x.clone()], &[v.clone()]).unwrap();
    let (_, b) = jvp(|xs| Ok(vec![plain(xs)?]), &[x.clone()], &[v.clone()]).unwrap();
    assert_close("checkpoint jvp", &vals(&a[0]), &vals(&b[0]), 1e-13);
    check("checkpoint", &twice, &[x.clone()]);
    // Forward over reverse through a checkpoint (its backward holds `Depends` nodes).
    let hv = |f: &dyn Fn(&[Array]) -> Result<Array>| {
        jvp(
            |xs| grad(|a| ops::sum(&f(a)?, Axes::All, false), xs),
            std::slice::from_ref(&x),
            std::slice::from_ref(&v),
        )
        .unwrap()
        .1
    };
    assert_close(
        "jvp of grad through checkpoint",
        &vals(&hv(&twice)[0]),
        &vals(&hv(&plain)[0]),
        1e-12,
    );
}

/// Every node reachable from `a` (each counted once).
fn graph_nodes(a: &Array) -> Vec<Array> {
    let mut seen: Vec<Array> = Vec::new();
    let mut stack = vec![a.clone()];
    while let Some(n) = stack.pop() {
        if seen.iter().any(|s| s.same(&n)) {
            continue;
        }
        stack.extend(n.inputs());
        seen.push(n);
    }
    seen
}

#[test]
fn one_forward_pass_builds_no_backward_graph() {
    // y = sin(sin(...sin(x))) with n sines: forward mode needs, besides the n sines, one cos and
    // one multiply per step (t_k = cos(y_{k-1}) t_{k-1}), nothing else. A transposed VJP would
    // build the backward pass and its transpose on top (several times as many nodes).
    let n = 60;
    let calls = AtomicUsize::new(0);
    // Leaves with no graph behind them (random arrays carry their generator's nodes until
    // evaluated, which made the node counts below depend on timing).
    let x = Array::from_slice(&[0.3f64, -0.7, 0.9], &[3]).unwrap();
    let t = Array::from_slice(&[1.0f64, 0.5, -2.0], &[3]).unwrap();
    let (_, jt) = jvp(
        |a| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut y = a[0].clone();
            for _ in 0..n {
                y = ops::sin(&y)?;
            }
            Ok(vec![y])
        },
        &[x.clone()],
        &[t.clone()],
    )
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "f is traced once");
    let nodes = graph_nodes(&jt[0]);
    let count = |pred: &dyn Fn(&Primitive) -> bool| {
        nodes
            .iter()
            .filter(|a| a.primitive().is_some_and(|p| pred(&p)))
            .count()
    };
    use tessera_core::primitive::{BinaryOp, UnaryOp};
    assert_eq!(count(&|p| *p == Primitive::Unary(UnaryOp::Cos)), n);
    assert_eq!(count(&|p| *p == Primitive::Binary(BinaryOp::Mul)), n);
    // The primal chain behind the cosines: n - 1 sines are needed (the last sine is the output,
    // not an input of any tangent node).
    assert_eq!(count(&|p| *p == Primitive::Unary(UnaryOp::Sin)), n - 1);
    // Plus the tracer, x and t: nothing else.
    assert!(nodes.len() <= 3 * n + 2, "{} nodes", nodes.len());
    // The value is right: Π cos(y_k) t.
    let mut y = vals(&x);
    let mut d = vals(&t);
    for _ in 0..n {
        for (yi, di) in y.iter_mut().zip(d.iter_mut()) {
            *di *= yi.cos();
            *yi = yi.sin();
        }
    }
    assert_close("chain", &vals(&jt[0]), &d, 1e-12);
}

#[test]
fn inputs_outputs_and_errors() {
    let x = rand(&[3], -1.0, 1.0, 52);
    let n = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
    // An integer primal carries no tangent; an output that does not depend on the float
    // primals gets zeros; an intermediate evaluated inside f does not cut the graph.
    let (outs, ts) = jvp(
        |a| {
            let y = ops::multiply(&a[0], &a[0])?;
            y.eval()?;
            Ok(vec![
                ops::add(&y, &a[1].astype(Dtype::F64)?)?,
                ops::multiply(&a[1], &a[1])?,
                ops::ones(&[2], Dtype::F32)?,
            ])
        },
        &[x.clone(), n.clone()],
        &[
            ops::ones_like(&x).unwrap(),
            ops::ones(&[3], Dtype::I32).unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(outs.len(), 3);
    let want: Vec<f64> = vals(&x).iter().map(|v| 2.0 * v).collect();
    assert_close("2x", &vals(&ts[0]), &want, 1e-15);
    assert_eq!((ts[1].dtype(), vals(&ts[1])), (Dtype::F32, vec![0.0; 3]));
    assert_eq!((ts[2].dtype(), vals(&ts[2])), (Dtype::F32, vec![0.0; 2]));
    // Tangents in another float dtype are cast to the primal's.
    let (_, ts) = jvp(
        |a| Ok(vec![ops::sin(&a[0])?]),
        &[x.clone()],
        &[ops::ones(&[3], Dtype::F32).unwrap()],
    )
    .unwrap();
    assert_eq!(ts[0].dtype(), Dtype::F64);
    // Wrong count or shape of tangents.
    assert!(jvp(|a| Ok(vec![a[0].clone()]), &[x.clone()], &[]).is_err());
    assert!(
        jvp(
            |a| Ok(vec![a[0].clone()]),
            &[x.clone()],
            &[ops::ones(&[4], Dtype::F64).unwrap()]
        )
        .is_err()
    );
    // The output may be the primal itself.
    let (_, ts) = jvp(|a| Ok(vec![a[0].clone()]), &[x.clone()], &[x.clone()]).unwrap();
    assert_eq!(vals(&ts[0]), vals(&x));
}

#[test]
fn forward_over_reverse_through_many_rules() {
    // x -> grad(sum(f(x) * w)) is a graph of backward rules (scatters, slice updates, scans,
    // where, broadcasts...): its jvp is checked against finite differences and, by the
    // inner-product identity, against its own vjp (reverse over reverse).
    let x = rand(&[3, 4], 0.3, 1.5, 53);
    let b = rand(&[4, 4], -1.0, 1.0, 54);
    let w = rand(&[3, 4], -1.0, 1.0, 55);
    type Fx<'a> = Box<dyn Fn(&Array) -> Result<Array> + 'a>;
    let fs: Vec<(&str, Fx<'_>)> = vec![
        ("mixed", Box::new(mixed)),
        ("tanh(x @ b)", Box::new(|x| ops::tanh(&ops::matmul(x, &b)?))),
        (
            "cumprod reverse",
            Box::new(|x| ops::cumprod(x, Some(1), true, true)),
        ),
        (
            "cummin * x",
            Box::new(|x| ops::multiply(&ops::cummin(x, Some(0), false, true)?, x)),
        ),
        (
            "prod and max",
            Box::new(|x| {
                ops::multiply(&ops::prod(x, 1, true)?, &ops::max(&ops::sin(x)?, 0, true)?)
            }),
        ),
        (
            "slices and concat",
            Box::new(|x| {
                let s = ops::slice_opt(x, &[(None, None, -1), (Some(1), None, 2)])?;
                let c = ops::concatenate(&[s.clone(), ops::square(&s)?], 1)?;
                ops::multiply(&c, &ops::exp(x)?)
            }),
        ),
        (
            "put and take along",
            Box::new(|x| {
                let i = Array::from_slice(&[1u32, 3, 0, 2, 2, 0], &[3, 2]).unwrap();
                let p = ops::put_along_axis(
                    x,
                    &i,
                    &ops::square(&ops::take_along_axis(x, &i, Some(1))?)?,
                    1,
                )?;
                ops::multiply(&p, x)
            }),
        ),
    ];
    let v = rand(&[3, 4], -1.0, 1.0, 57);
    for (name, f) in &fs {
        // x -> J(x) v: its own jvp against finite differences, and its vjp (reverse over
        // forward) by the inner-product identity.
        let jv = |xs: &[Array]| -> Result<Array> {
            Ok(jvp(|a| Ok(vec![f(&a[0])?]), xs, std::slice::from_ref(&v))?.1[0].clone())
        };
        check(&format!("jvp of {name}"), &jv, std::slice::from_ref(&x));
        let g = |xs: &[Array]| -> Result<Array> {
            Ok(grad(
                |a| ops::sum(&ops::multiply(&f(&a[0])?, &w)?, Axes::All, false),
                xs,
            )?[0]
                .clone())
        };
        check(&format!("grad of {name}"), &g, std::slice::from_ref(&x));
    }
}

#[test]
fn quantization_outputs_carry_no_tangent() {
    // Quantizing is an offline step: the vjp treats every part as constant, and so does the jvp.
    let w = randf(&[2, 64], -1.0, 1.0, 56);
    let (_, t) = jvp(
        |a| {
            let (_, s, b) = ops::quantize(&a[0], 32, 4)?;
            Ok(vec![s, b])
        },
        std::slice::from_ref(&w),
        &[ops::ones_like(&w).unwrap()],
    )
    .unwrap();
    for t in &t {
        assert!(vals(t).iter().all(|&v| v == 0.0));
    }
}
