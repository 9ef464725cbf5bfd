//! vmap(f)(X) against stacking f(x_i) over the mapped axis.

use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{grad, vmap};
use tessera_core::{Array, Dtype, Result, random};

fn rand(shape: &[usize], seed: u64) -> Array {
    random::uniform(-1.0, 1.0, shape, Dtype::F64, Some(&random::key(seed))).unwrap()
}

type F<'a> = dyn Fn(&[Array]) -> Result<Vec<Array>> + 'a;

/// Compares vmap with a loop over examples: inputs mapped on `in_axes`, outputs stacked on 0.
fn check(name: &str, f: &F<'_>, inputs: &[Array], in_axes: &[Option<isize>]) {
    let out_axes = vec![0isize; f(&per_example(inputs, in_axes, 0)).unwrap().len()];
    let got = vmap(|xs| f(xs), inputs, in_axes, &out_axes).unwrap();
    let n = inputs
        .iter()
        .zip(in_axes)
        .find_map(|(x, a)| a.map(|a| x.dim(a).unwrap()))
        .unwrap();
    let per: Vec<Vec<Array>> = (0..n)
        .map(|i| f(&per_example(inputs, in_axes, i)).unwrap())
        .collect();
    for (j, g) in got.iter().enumerate() {
        let expect = ops::stack(&per.iter().map(|o| o[j].clone()).collect::<Vec<_>>(), 0).unwrap();
        assert_eq!(g.shape(), expect.shape(), "{name}: output {j} shape");
        let (a, b) = (g.to_vec::<f64>().unwrap(), expect.to_vec::<f64>().unwrap());
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-12 * y.abs().max(1.0),
                "{name}: output {j}[{k}]: {x} vs {y}"
            );
        }
    }
}

fn per_example(inputs: &[Array], in_axes: &[Option<isize>], i: usize) -> Vec<Array> {
    inputs
        .iter()
        .zip(in_axes)
        .map(|(x, a)| match a {
            Some(a) => {
                let ax = ops::normalize_axis("t", *a, x.ndim()).unwrap();
                ops::squeeze(&ops::slice_axis(x, ax, i, i + 1).unwrap(), ax as isize).unwrap()
            }
            None => x.clone(),
        })
        .collect()
}

#[test]
fn elementwise_reductions_and_shapes() {
    let x = rand(&[4, 3, 5], 1);
    let w = rand(&[5, 2], 2);
    let one = |f: fn(&Array) -> Result<Array>| move |xs: &[Array]| Ok(vec![f(&xs[0])?]);
    check("exp", &one(ops::exp), &[x.clone()], &[Some(0)]);
    check(
        "softmax",
        &one(|a| ops::softmax(a, -1)),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "softmax axis 0",
        &one(|a| ops::softmax(a, 0)),
        &[x.clone()],
        &[Some(1)],
    );
    check(
        "sum axis 1",
        &one(|a| ops::sum(a, 1, false)),
        &[x.clone()],
        &[Some(2)],
    );
    check(
        "argmax",
        &one(|a| ops::argmax(a, Some(0), false)?.astype(Dtype::F64)),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "cumsum",
        &one(|a| ops::cumsum(a, Some(1), true, false)),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "sort",
        &one(|a| ops::sort(a, Some(0))),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "reshape+transpose",
        &one(|a| ops::transpose(&ops::reshape(a, &[5, 3])?, None)),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "slice",
        &one(|a| ops::slice_opt(a, &[(None, None, -1), (Some(1), None, 2)])),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "broadcast",
        &one(|a| ops::broadcast_to(a, &[2, 3, 5])),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "pad",
        &one(|a| ops::pad(a, &[(1, 1), (0, 2)], ops::PadMode::Constant(0.5))),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "concatenate with itself",
        &one(|a| ops::concatenate(&[a.clone(), ops::exp(a)?], 1)),
        &[x.clone()],
        &[Some(0)],
    );
    check(
        "matmul, w unmapped",
        &|xs: &[Array]| Ok(vec![ops::matmul(&xs[0], &xs[1])?]),
        &[x.clone(), w.clone()],
        &[Some(0), None],
    );
    check(
        "matmul, both mapped",
        &|xs: &[Array]| Ok(vec![ops::matmul(&xs[0], &ops::transpose(&xs[1], None)?)?]),
        &[x.clone(), x.clone()],
        &[Some(0), Some(0)],
    );
    let b = rand(&[5], 3);
    check(
        "add unmapped row",
        &|xs: &[Array]| Ok(vec![ops::add(&xs[0], &xs[1])?]),
        &[x.clone(), b.clone()],
        &[Some(0), None],
    );
    check(
        "where",
        &|xs: &[Array]| {
            Ok(vec![ops::where_(
                &ops::greater(&xs[0], &xs[1])?,
                &xs[0],
                &xs[1],
            )?])
        },
        &[x.clone(), b],
        &[Some(1), None],
    );
    check(
        "two outputs",
        &|xs: &[Array]| {
            Ok(vec![
                ops::max(&xs[0], Axes::All, false)?,
                ops::mean(&xs[0], 0, true)?,
            ])
        },
        &[x.clone()],
        &[Some(0)],
    );
}

#[test]
fn indexing() {
    let x = rand(&[4, 6], 4);
    let idx = Array::from_slice(&[5i32, 0, 2], &[3]).unwrap();
    check(
        "take, fixed indices",
        &|xs: &[Array]| Ok(vec![ops::take(&xs[0], &idx, Some(0))?]),
        &[x.clone()],
        &[Some(0)],
    );
    let bidx = Array::from_slice(&[1i32, 2, 3, 0, 5, 4, 0, 0], &[4, 2]).unwrap();
    check(
        "take, mapped indices",
        &|xs: &[Array]| Ok(vec![ops::take(&xs[0], &xs[1], Some(0))?]),
        &[x.clone(), bidx.clone()],
        &[Some(0), Some(0)],
    );
    check(
        "take_along",
        &|xs: &[Array]| Ok(vec![ops::take_along_axis(&xs[0], &xs[1], Some(0))?]),
        &[x.clone(), bidx.clone()],
        &[Some(0), Some(0)],
    );
    let u = rand(&[4, 2], 5);
    check(
        "slice_update",
        &|xs: &[Array]| Ok(vec![ops::slice_update(&xs[0], &xs[1], &[1], &[3], &[1])?]),
        &[x.clone(), u],
        &[Some(0), Some(0)],
    );
}

#[test]
fn per_example_gradients_and_axes() {
    // vmap of grad: per-example gradients of sum(tanh(x @ w)).
    let x = rand(&[5, 3], 6);
    let w = rand(&[3, 2], 7);
    let f = |xs: &[Array]| -> Result<Vec<Array>> {
        let g = grad(
            |ys| ops::sum(&ops::tanh(&ops::matmul(&ys[0], &ys[1])?)?, Axes::All, false),
            &[xs[0].clone(), xs[1].clone()],
        )?;
        Ok(vec![g[1].clone()])
    };
    check("vmap(grad)", &f, &[x.clone(), w.clone()], &[Some(0), None]);
    // out_axes moves the batch dimension.
    let r = vmap(
        |xs| Ok(vec![ops::exp(&xs[0])?]),
        &[x.clone()],
        &[Some(0)],
        &[1],
    )
    .unwrap();
    assert_eq!(r[0].shape(), &[3, 5]);
    // Errors: mismatched batch sizes, no mapped input.
    assert!(
        vmap(
            |xs| Ok(vec![xs[0].clone()]),
            &[x.clone(), w.clone()],
            &[Some(0), Some(0)],
            &[0]
        )
        .is_err()
    );
    assert!(vmap(|xs| Ok(vec![xs[0].clone()]), &[x], &[None], &[0]).is_err());
}
