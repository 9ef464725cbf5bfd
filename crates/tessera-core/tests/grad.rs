//! Reverse-mode gradients against central finite differences, in f64.

use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{grad, value_and_grad, vjp};
use tessera_core::{Array, Dtype, Result, random};

fn rand(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Array {
    random::uniform(lo, hi, shape, Dtype::F64, Some(&random::key(seed))).unwrap()
}

type F<'a> = dyn Fn(&[Array]) -> Result<Array> + 'a;

/// Checks grad of L(x) = sum(f(x) * w) for fixed random w against central differences.
fn check(name: &str, f: &F<'_>, inputs: &[Array]) {
    let out = f(inputs).unwrap();
    let w = rand(out.shape(), -1.0, 1.0, 99);
    let loss = |xs: &[Array]| -> Result<Array> {
        ops::sum(&ops::multiply(&f(xs)?, &w)?, Axes::All, false)
    };
    let g = grad(loss, inputs).unwrap();
    let h = 1e-6;
    for (i, x) in inputs.iter().enumerate() {
        let base = x.to_vec::<f64>().unwrap();
        let gv = g[i].to_vec::<f64>().unwrap();
        assert_eq!(g[i].shape(), x.shape(), "{name}: gradient shape");
        for j in 0..base.len() {
            let eval_at = |d: f64| -> f64 {
                let mut v = base.clone();
                v[j] += d;
                let mut xs = inputs.to_vec();
                xs[i] = Array::from_slice(&v, x.shape()).unwrap();
                loss(&xs).unwrap().item::<f64>().unwrap()
            };
            let num = (eval_at(h) - eval_at(-h)) / (2.0 * h);
            assert!(
                (gv[j] - num).abs() <= 1e-5 * num.abs().max(1.0),
                "{name}: d/dx{i}[{j}] = {} but finite differences give {num}",
                gv[j]
            );
        }
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
    ];
    for (name, f, input) in cases {
        check(name, &|xs: &[Array]| f(&xs[0]), std::slice::from_ref(input));
    }
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
    ];
    for (name, f) in cases {
        check(
            name,
            &|xs: &[Array]| f(&xs[0], &xs[1]),
            &[a.clone(), b.clone()],
        );
    }
    let c = ops::greater(&a, &Array::scalar(1.0f64)).unwrap();
    check(
        "where",
        &|xs: &[Array]| ops::where_(&c, &xs[0], &xs[1]),
        &[a.clone(), b.clone()],
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
}

#[test]
fn reductions_and_normalisations() {
    let x = rand(&[3, 4], 0.5, 2.0, 5);
    check(
        "sum",
        &|xs: &[Array]| ops::sum(&xs[0], 1, false),
        &[x.clone()],
    );
    check(
        "sum all",
        &|xs: &[Array]| ops::sum(&xs[0], Axes::All, true),
        &[x.clone()],
    );
    check(
        "mean",
        &|xs: &[Array]| ops::mean(&xs[0], 0, false),
        &[x.clone()],
    );
    check(
        "prod",
        &|xs: &[Array]| ops::prod(&xs[0], 1, false),
        &[x.clone()],
    );
    check(
        "max",
        &|xs: &[Array]| ops::max(&xs[0], 0, true),
        &[x.clone()],
    );
    check(
        "min",
        &|xs: &[Array]| ops::min(&xs[0], Axes::All, false),
        &[x.clone()],
    );
    check(
        "var",
        &|xs: &[Array]| ops::var(&xs[0], 1, false, 1),
        &[x.clone()],
    );
    check(
        "std",
        &|xs: &[Array]| ops::std(&xs[0], Axes::All, false, 0),
        &[x.clone()],
    );
    check(
        "logsumexp",
        &|xs: &[Array]| ops::logsumexp(&xs[0], 1, false),
        &[x.clone()],
    );
    check(
        "softmax fused",
        &|xs: &[Array]| ops::softmax(&xs[0], -1),
        &[x.clone()],
    );
    check(
        "softmax axis 0",
        &|xs: &[Array]| ops::softmax(&xs[0], 0),
        &[x.clone()],
    );
    check(
        "log_softmax",
        &|xs: &[Array]| ops::log_softmax(&xs[0], -1),
        &[x.clone()],
    );
    check(
        "cumsum",
        &|xs: &[Array]| ops::cumsum(&xs[0], Some(1), false, true),
        &[x.clone()],
    );
    check(
        "cumsum reverse exclusive",
        &|xs: &[Array]| ops::cumsum(&xs[0], Some(0), true, false),
        &[x.clone()],
    );
    check(
        "sort",
        &|xs: &[Array]| ops::sort(&xs[0], Some(1)),
        &[x.clone()],
    );
}

#[test]
fn shape_and_indexing_ops() {
    let x = rand(&[3, 4], -1.0, 1.0, 6);
    let y = rand(&[3, 2], -1.0, 1.0, 7);
    check(
        "reshape",
        &|xs: &[Array]| ops::reshape(&xs[0], &[2, 6]),
        &[x.clone()],
    );
    check(
        "transpose",
        &|xs: &[Array]| ops::transpose(&xs[0], None),
        &[x.clone()],
    );
    check(
        "broadcast_to",
        &|xs: &[Array]| ops::broadcast_to(&xs[0], &[2, 3, 4]),
        &[x.clone()],
    );
    check(
        "slice",
        &|xs: &[Array]| ops::slice_opt(&xs[0], &[(None, None, -2), (Some(1), Some(4), 2)]),
        &[x.clone()],
    );
    check(
        "concatenate",
        &|xs: &[Array]| ops::concatenate(&[xs[0].clone(), xs[1].clone()], 1),
        &[x.clone(), y.clone()],
    );
    check(
        "pad",
        &|xs: &[Array]| ops::pad(&xs[0], &[(1, 0), (0, 2)], ops::PadMode::Edge),
        &[x.clone()],
    );
    check(
        "tile",
        &|xs: &[Array]| ops::tile(&xs[0], &[2, 1]),
        &[x.clone()],
    );
    check(
        "repeat",
        &|xs: &[Array]| ops::repeat(&xs[0], 2, Some(1)),
        &[x.clone()],
    );
    check(
        "roll",
        &|xs: &[Array]| ops::roll(&xs[0], 1, Some(1)),
        &[x.clone()],
    );
    check(
        "split",
        &|xs: &[Array]| Ok(ops::split(&xs[0], ops::SplitAt::Indices(vec![1]), 1)?[1].clone()),
        &[x.clone()],
    );
    let idx = Array::from_slice(&[2i32, 0, 2, -1], &[4]).unwrap();
    check(
        "take",
        &|xs: &[Array]| ops::take(&xs[0], &idx, Some(1)),
        &[x.clone()],
    );
    let along = Array::from_slice(&[1u32, 0, 3, 3, 2, 0], &[3, 2]).unwrap();
    check(
        "take_along_axis",
        &|xs: &[Array]| ops::take_along_axis(&xs[0], &along, Some(1)),
        &[x.clone()],
    );
    let put = Array::from_slice(&[1u32, 0, 3, 2, 2, 0], &[3, 2]).unwrap();
    check(
        "put_along_axis",
        &|xs: &[Array]| ops::put_along_axis(&xs[0], &put, &xs[1], 1),
        &[x.clone(), y.clone()],
    );
    let rows = Array::from_slice(&[0i32, 2, 0], &[3]).unwrap();
    let upd = rand(&[3, 4], -1.0, 1.0, 8);
    check(
        "scatter_add",
        &|xs: &[Array]| ops::scatter_add(&xs[0], &rows, &xs[1], 0),
        &[x.clone(), upd.clone()],
    );
    check(
        "slice_update",
        &|xs: &[Array]| ops::slice_update(&xs[0], &xs[1], &[0, 1], &[3, 3], &[1, 1]),
        &[x.clone(), y.clone()],
    );
    let r = Array::from_slice(&[2i32, 0], &[2]).unwrap();
    let c = Array::from_slice(&[1i32, 3], &[2]).unwrap();
    check(
        "gather",
        &|xs: &[Array]| ops::gather(&xs[0], &[r.clone(), c.clone()], &[0, 1]),
        &[x.clone()],
    );
    // astype passes the cotangent through (finite differences would only see f32 rounding steps).
    let g = grad(
        |xs| ops::sum(&xs[0].astype(Dtype::F32)?, Axes::All, false),
        &[x.clone()],
    )
    .unwrap();
    assert_eq!(g[0].dtype(), Dtype::F64);
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![1.0; 12]);
}

#[test]
fn linear_algebra() {
    let a = rand(&[2, 3, 4], -1.0, 1.0, 9);
    let b = rand(&[4, 5], -1.0, 1.0, 10);
    check(
        "batched matmul with broadcast",
        &|xs: &[Array]| ops::matmul(&xs[0], &xs[1]),
        &[a.clone(), b.clone()],
    );
    let v = rand(&[4], -1.0, 1.0, 11);
    check(
        "matrix @ vector",
        &|xs: &[Array]| ops::matmul(&xs[0], &xs[1]),
        &[
            b.clone(),
            ops::slice(&rand(&[5], -1.0, 1.0, 12), &[0], &[5], &[1]).unwrap(),
        ],
    );
    check(
        "vector @ matrix",
        &|xs: &[Array]| ops::matmul(&xs[0], &xs[1]),
        &[v.clone(), b.clone()],
    );
    check(
        "einsum",
        &|xs: &[Array]| ops::einsum("bij,jk->bik", &[xs[0].clone(), xs[1].clone()]),
        &[a.clone(), b.clone()],
    );
    check(
        "tensordot",
        &|xs: &[Array]| ops::tensordot(&xs[0], &xs[1], &[2], &[0]),
        &[a.clone(), b.clone()],
    );
}

#[test]
fn second_derivatives_and_values() {
    // d/dx sum(sin x) = cos x; d2 = -sin x.
    let x = rand(&[5], -2.0, 2.0, 13);
    let d2 = grad(
        |xs| {
            let g = grad(
                |ys| ops::sum(&ops::sin(&ys[0])?, Axes::All, false),
                &[xs[0].clone()],
            )?;
            ops::sum(&g[0], Axes::All, false)
        },
        &[x.clone()],
    )
    .unwrap();
    let expect = ops::negative(&ops::sin(&x).unwrap())
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    for (g, e) in d2[0].to_vec::<f64>().unwrap().iter().zip(&expect) {
        assert!((g - e).abs() < 1e-12, "{g} vs {e}");
    }
    // value_and_grad returns the value; integer inputs get zero gradients; eval inside f is fine.
    let n = Array::from_slice(&[1i32, 2], &[2]).unwrap();
    let (v, g) = value_and_grad(
        |xs| {
            let y = ops::multiply(&xs[0], &xs[0])?;
            y.eval()?; // evaluating an intermediate must not cut the graph
            ops::add(
                &ops::sum(&y, Axes::All, false)?,
                &ops::sum(&xs[1].astype(Dtype::F64)?, Axes::All, false)?,
            )
        },
        &[x.clone(), n],
    )
    .unwrap();
    let xv = x.to_vec::<f64>().unwrap();
    assert!(
        (v.item::<f64>().unwrap() - (xv.iter().map(|a| a * a).sum::<f64>() + 3.0)).abs() < 1e-12
    );
    for (g, a) in g[0].to_vec::<f64>().unwrap().iter().zip(&xv) {
        assert!((g - 2.0 * a).abs() < 1e-12);
    }
    assert_eq!(g[1].to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    // vjp with an explicit cotangent, and a clear error for a wrong shape.
    let (_, ct) = vjp(
        |xs| Ok(vec![ops::multiply(&xs[0], &Array::scalar(3.0f64))?]),
        &[x.clone()],
        &[ops::ones(&[5], Dtype::F64).unwrap()],
    )
    .unwrap();
    assert_eq!(ct[0].to_vec::<f64>().unwrap(), vec![3.0; 5]);
    assert!(
        vjp(
            |xs| Ok(vec![xs[0].clone()]),
            &[x.clone()],
            &[ops::ones(&[4], Dtype::F64).unwrap()]
        )
        .is_err()
    );
    assert!(
        grad(|xs| Ok(xs[0].clone()), &[x]).is_err(),
        "grad of a non-scalar function is an error"
    );
}

/// jvp against vjp by the inner-product identity <J t, u> = <t, J^T u>, on a few functions.
#[test]
fn jvp_matches_vjp_by_inner_product() {
    use tessera_core::transforms::jvp;
    let fs: Vec<(&str, Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>)> = vec![
        (
            "tanh(x @ w)",
            Box::new(|xs: &[Array]| Ok(vec![ops::tanh(&ops::matmul(&xs[0], &xs[1])?)?])),
        ),
        (
            "softmax(x) * exp(x)",
            Box::new(|xs: &[Array]| {
                Ok(vec![ops::multiply(
                    &ops::softmax(&xs[0], -1)?,
                    &ops::exp(&xs[0])?,
                )?])
            }),
        ),
        (
            "sum over axis",
            Box::new(|xs: &[Array]| Ok(vec![ops::logsumexp(&xs[0], 1, false)?])),
        ),
    ];
    for (name, f) in fs {
        let xs = vec![rand(&[3, 4], -1.0, 1.0, 20), rand(&[4, 4], -1.0, 1.0, 21)];
        let xs = if name.contains('@') {
            xs
        } else {
            vec![xs[0].clone()]
        };
        let ts: Vec<Array> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| rand(x.shape(), -1.0, 1.0, 30 + i as u64))
            .collect();
        let (outs, jt) = jvp(|a| f(a), &xs, &ts).unwrap();
        let us: Vec<Array> = outs
            .iter()
            .enumerate()
            .map(|(i, o)| rand(o.shape(), -1.0, 1.0, 40 + i as u64))
            .collect();
        let (_, jtu) = vjp(|a| f(a), &xs, &us).unwrap();
        let dot = |a: &[Array], b: &[Array]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(x, y)| {
                    ops::sum(&ops::multiply(x, y).unwrap(), Axes::All, false)
                        .unwrap()
                        .item::<f64>()
                        .unwrap()
                })
                .sum()
        };
        let (l, r) = (dot(&jt, &us), dot(&ts, &jtu));
        assert!(
            (l - r).abs() < 1e-10 * l.abs().max(1.0),
            "{name}: <Jt,u> = {l}, <t,J^T u> = {r}"
        );
    }
}

#[test]
fn stop_gradient_blocks_the_gradient() {
    let x = rand(&[3], 0.5, 1.5, 50);
    // f = x * stop_gradient(x): df/dx = stop_gradient(x) = x (not 2x).
    let g = grad(
        |xs| {
            ops::sum(
                &ops::multiply(&xs[0], &ops::stop_gradient(&xs[0])?)?,
                Axes::All,
                false,
            )
        },
        &[x.clone()],
    )
    .unwrap();
    assert_eq!(g[0].to_vec::<f64>().unwrap(), x.to_vec::<f64>().unwrap());
}
