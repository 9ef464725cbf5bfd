//! compile: results equal the uncompiled function; fusion and CSE happen; transforms compose.

use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{self, compile, grad, vmap};
use tessera_core::{Array, Dtype, Result, random};

fn rand(shape: &[usize], seed: u64) -> Array {
    random::uniform(-2.0, 2.0, shape, Dtype::F32, Some(&random::key(seed))).unwrap()
}

fn assert_same(a: &[Array], b: &[Array]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape(), y.shape());
        assert_eq!(x.dtype(), y.dtype());
        let (u, v) = (x.to_vec::<f64>().unwrap(), y.to_vec::<f64>().unwrap());
        for (i, (p, q)) in u.iter().zip(&v).enumerate() {
            assert!(
                p == q || (p.is_nan() && q.is_nan()),
                "element {i}: {p} vs {q}"
            );
        }
    }
}

fn chain10(x: &Array) -> Result<Array> {
    let mut y = x.clone();
    for i in 0..10 {
        y = match i % 4 {
            0 => ops::multiply(&y, &Array::scalar(1.01f32))?,
            1 => ops::add(&y, &Array::scalar(0.5f32))?,
            2 => ops::tanh(&y)?,
            _ => ops::maximum(&y, &ops::negative(&y)?)?,
        };
    }
    Ok(y)
}

#[test]
fn fused_chain_equals_eager_and_is_one_kernel() {
    let f = |xs: &[Array]| Ok(vec![chain10(&xs[0])?]);
    let c = compile(f);
    for shape in [
        vec![1000usize],
        vec![3, 7],
        vec![],
        vec![0, 4],
        vec![100_003],
    ] {
        let x = rand(&shape, 1);
        assert_same(
            &c.call(std::slice::from_ref(&x)).unwrap(),
            &f(std::slice::from_ref(&x)).unwrap(),
        );
    }
    let x = rand(&[1000], 2);
    assert_eq!(c.fused_kernels(std::slice::from_ref(&x)).unwrap(), 1);
    assert_eq!(
        c.node_count(&[x]).unwrap(),
        1,
        "eleven element-wise nodes became one"
    );
}

#[test]
fn mixed_graphs_cse_and_multiple_outputs() {
    // Two identical sub-expressions, a reduction and a matmul between fusible chains, an
    // intermediate used twice, and two outputs.
    let f = |xs: &[Array]| -> Result<Vec<Array>> {
        let (x, w) = (&xs[0], &xs[1]);
        let a = ops::exp(&ops::multiply(x, &Array::scalar(0.3f32))?)?;
        let a2 = ops::exp(&ops::multiply(x, &Array::scalar(0.3f32))?)?;
        let h = ops::tanh(&ops::add(&ops::matmul(&a, w)?, &Array::scalar(1.0f32))?)?;
        let s = ops::sum(&h, 1, true)?;
        let y = ops::divide(
            &ops::subtract(&h, &s)?,
            &ops::add(&a2, &a)?
                .astype(Dtype::F32)
                .and_then(|v| ops::sum(&v, Axes::All, false))?,
        )?;
        Ok(vec![y, ops::sigmoid(&h)?])
    };
    let c = compile(f);
    let (x, w) = (rand(&[4, 6], 3), rand(&[6, 6], 4));
    let ins = [x.clone(), w.clone()];
    assert_same(&c.call(&ins).unwrap(), &f(&ins).unwrap());
    // Without CSE `a` and `a2` would be two 2-op chains; with it, one.
    let plain_nodes = 13;
    assert!(
        c.node_count(&ins).unwrap() < plain_nodes,
        "{} nodes",
        c.node_count(&ins).unwrap()
    );
    assert!(c.fused_kernels(&ins).unwrap() >= 1);
    // f64 inputs are not fused (the fused kernel is float32) but still compile and agree.
    let x64 = x.astype(Dtype::F64).unwrap();
    let g = |xs: &[Array]| Ok(vec![ops::exp(&ops::sin(&xs[0])?)?]);
    let cg = compile(g);
    assert_same(
        &cg.call(std::slice::from_ref(&x64)).unwrap(),
        &g(std::slice::from_ref(&x64)).unwrap(),
    );
    assert_eq!(cg.fused_kernels(&[x64]).unwrap(), 0);
}

#[test]
fn compile_composes_with_grad_and_vmap() {
    let f = |xs: &[Array]| Ok(vec![chain10(&xs[0])?]);
    let c = compile(f);
    let x = rand(&[5], 5);
    // grad through a fused kernel = grad of the original.
    let g1 = grad(
        |xs| ops::sum(&c.call(xs)?[0], Axes::All, false),
        std::slice::from_ref(&x),
    )
    .unwrap();
    let g2 = grad(
        |xs| ops::sum(&chain10(&xs[0])?, Axes::All, false),
        std::slice::from_ref(&x),
    )
    .unwrap();
    let (a, b) = (
        g1[0].to_vec::<f32>().unwrap(),
        g2[0].to_vec::<f32>().unwrap(),
    );
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-6 * q.abs().max(1.0), "{p} vs {q}");
    }
    // compile of grad.
    let cg = compile(|xs: &[Array]| grad(|ys| ops::sum(&chain10(&ys[0])?, Axes::All, false), xs));
    let g3 = cg.call(std::slice::from_ref(&x)).unwrap();
    let c3 = g3[0].to_vec::<f32>().unwrap();
    for (p, q) in c3.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-6 * q.abs().max(1.0));
    }
    // vmap of a compiled function.
    let xs = rand(&[3, 5], 6);
    let v = vmap(|a| c.call(a), std::slice::from_ref(&xs), &[Some(0)], &[0]).unwrap();
    assert_same(&v, &[chain10(&xs).unwrap()]);
}

#[test]
fn comparisons_and_where_fuse_as_masks() {
    // Leaky-ReLU-like select chains and a mask used twice; a mask that escapes stays unfused.
    let f = |xs: &[Array]| -> Result<Vec<Array>> {
        let (x, y) = (&xs[0], &xs[1]);
        let m = ops::greater(x, y)?;
        let a = ops::where_(
            &m,
            &ops::multiply(x, &Array::scalar(2.0f32))?,
            &ops::multiply(y, &Array::scalar(0.1f32))?,
        )?;
        let b = ops::where_(&m, &a, &ops::exp(&a)?)?;
        let e = ops::where_(
            &ops::equal(x, &Array::scalar(0.0f32))?,
            &Array::scalar(1.0f32),
            &b,
        )?;
        Ok(vec![ops::add(&e, &Array::scalar(0.25f32))?])
    };
    let c = compile(f);
    let ins = [rand(&[4097], 7), rand(&[4097], 8)];
    assert_same(&c.call(&ins).unwrap(), &f(&ins).unwrap());
    assert_eq!(
        c.node_count(&ins).unwrap(),
        1,
        "masks, selects and arithmetic in one kernel"
    );
    let g = |xs: &[Array]| -> Result<Vec<Array>> {
        let m = ops::greater(&xs[0], &Array::scalar(0.0f32))?;
        Ok(vec![ops::where_(&m, &xs[0], &Array::scalar(0.0f32))?, m])
    };
    let cg = compile(g);
    let x = rand(&[100], 9);
    assert_same(
        &cg.call(std::slice::from_ref(&x)).unwrap(),
        &g(std::slice::from_ref(&x)).unwrap(),
    );
    assert_eq!(
        cg.fused_kernels(&[x]).unwrap(),
        0,
        "an escaping mask is not fused"
    );
    // Gradients of a ReLU network through compile (the backward is masks and selects).
    let h = |xs: &[Array]| {
        grad(
            |ys| {
                ops::sum(
                    &ops::maximum(&ops::multiply(&ys[0], &ys[0])?, &ops::sin(&ys[0])?)?,
                    Axes::All,
                    false,
                )
            },
            xs,
        )
    };
    let ch = compile(h);
    let x = rand(&[1000], 10);
    assert_same(
        &ch.call(std::slice::from_ref(&x)).unwrap(),
        &h(std::slice::from_ref(&x)).unwrap(),
    );
    assert!(ch.fused_kernels(&[x]).unwrap() >= 1);
}

/// Shapeless compile: one trace for every batch size and sequence length of an MLP-like block
/// with a softmax, a reduction and a transpose; results equal the uncompiled function.
#[test]
fn shapeless_compile_reuses_one_trace_across_shapes() {
    let w = Array::from_vec((0..12).map(|i| (i as f32 - 6.0) / 7.0).collect(), &[4, 3]).unwrap();
    let b = Array::from_slice(&[0.1f32, -0.2, 0.3], &[3]).unwrap();
    let body = move |x: &[Array]| -> tessera_core::Result<Vec<Array>> {
        let h = ops::tanh(&ops::add(&ops::matmul(&x[0], &w)?, &b)?)?;
        let s = ops::softmax(&h, -1)?;
        let m = ops::sum(&ops::multiply(&s, &h)?, -1, false)?;
        let t = ops::transpose(&h, None)?;
        Ok(vec![m, ops::exp(&t)?])
    };
    let f = tessera_core::transforms::compile_shapeless(body.clone());
    for (n, seed) in [(2usize, 1u64), (5, 2), (1, 3), (9, 4)] {
        let x = tessera_core::random::normal(
            &[n, 4],
            Dtype::F32,
            0.0,
            1.0,
            Some(&tessera_core::random::key(seed)),
        )
        .unwrap();
        let got = f.call(std::slice::from_ref(&x)).unwrap();
        let want = body(std::slice::from_ref(&x)).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.shape(), w.shape());
            let (g, w) = (g.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
            for (a, e) in g.iter().zip(&w) {
                assert!((a - e).abs() <= 1e-6 * (1.0 + e.abs()), "n={n}: {a} vs {e}");
            }
        }
    }
    assert_eq!(f.traces(), 1, "one trace should serve every batch size");
}

/// What cannot be re-derived is traced again, never computed wrongly: a reshape to a fixed
/// shape, and a fused group whose broadcast input no longer lines up (traced with a batch of 1,
/// where the bias has the same size as the activations).
#[test]
fn shapeless_compile_retraces_what_it_cannot_reshape() {
    let f = tessera_core::transforms::compile_shapeless(|x: &[Array]| {
        let flat = ops::reshape(&x[0], &[x[0].size()])?;
        Ok(vec![ops::multiply(&flat, &flat)?])
    });
    for n in [2usize, 3] {
        let x = Array::from_vec((0..2 * n).map(|i| i as f32).collect(), &[n, 2]).unwrap();
        let y = f.call(&[x]).unwrap()[0].to_vec::<f32>().unwrap();
        assert_eq!(y, (0..2 * n).map(|i| (i * i) as f32).collect::<Vec<_>>());
    }
    assert_eq!(f.traces(), 2);

    let g = tessera_core::transforms::compile_shapeless(|x: &[Array]| {
        Ok(vec![ops::tanh(&ops::add(
            &ops::multiply(&x[0], &x[0])?,
            &x[1],
        )?)?])
    });
    let bias = Array::from_slice(&[0.5f32, -0.5, 1.0], &[3]).unwrap();
    for n in [1usize, 4] {
        let x = Array::from_vec((0..3 * n).map(|i| i as f32 / 5.0).collect(), &[n, 3]).unwrap();
        let got = g.call(&[x.clone(), bias.clone()]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap();
        let want = ops::tanh(&ops::add(&ops::multiply(&x, &x).unwrap(), &bias).unwrap())
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(got, want, "n={n}");
    }
}

/// A broadcast operand passed as an input (a bias over a batch) stays outside the fused group:
/// the fused kernel takes full-size or single values only (this used to fail at run time).
#[test]
fn compile_with_a_broadcast_input_operand() {
    let g = compile(|x: &[Array]| {
        Ok(vec![ops::tanh(&ops::add(
            &ops::multiply(&x[0], &x[0])?,
            &x[1],
        )?)?])
    });
    let bias = Array::from_slice(&[0.5f32, -0.5, 1.0], &[3]).unwrap();
    let x = Array::from_vec((0..12).map(|i| i as f32 / 5.0).collect(), &[4, 3]).unwrap();
    let got = g.call(&[x.clone(), bias.clone()]).unwrap();
    let want = ops::tanh(&ops::add(&ops::multiply(&x, &x).unwrap(), &bias).unwrap()).unwrap();
    assert_same(&got, &[want]);
}

/// An element-wise chain ending in a sum, max or min over the last axis is one fused kernel that
/// never writes the element-wise result, and gives bitwise the uncompiled results (short rows,
/// rows longer than a kernel chunk); gradients and vmap go through it.
#[test]
fn a_trailing_last_axis_reduction_is_fused() {
    let body = |x: &[Array]| -> Result<Vec<Array>> {
        let prod = ops::multiply(&x[0], &x[1])?;
        Ok(vec![
            ops::sum(&ops::tanh(&prod)?, -1, false)?,
            ops::max(&ops::add(&x[0], &x[1])?, -1, true)?,
            ops::mean(&ops::exp(&x[1])?, -1, false)?,
        ])
    };
    let f = compile(body);
    for (rows, len) in [(4usize, 37usize), (3, 2000), (1, 5)] {
        let (a, b) = (rand(&[rows, len], 7), rand(&[rows, len], 8));
        let ins = [a, b];
        let got = f.call(&ins).unwrap();
        let want = body(&ins).unwrap();
        assert_same(&got, &want);
        // Three kernels (each reduction with its chain), no separate reduce nodes.
        assert_eq!(f.fused_kernels(&ins).unwrap(), 3, "rows {rows} len {len}");
    }
    // Gradients through the compiled function equal those of the plain one.
    let (a, b) = (rand(&[3, 9], 1), rand(&[3, 9], 2));
    let loss = |g: &dyn Fn(&[Array]) -> Result<Vec<Array>>, xs: &[Array]| -> Result<Array> {
        let out = g(xs)?;
        ops::add(
            &ops::sum(&out[0], Axes::All, false)?,
            &ops::sum(&out[1], Axes::All, false)?,
        )
    };
    let gc = grad(|xs| loss(&|v| f.call(v), xs), &[a.clone(), b.clone()]).unwrap();
    let gp = grad(|xs| loss(&body, xs), &[a.clone(), b.clone()]).unwrap();
    assert_same(&gc, &gp);
    // vmap over a batch of the compiled function.
    let (xa, xb) = (rand(&[2, 3, 9], 3), rand(&[2, 3, 9], 4));
    let vm = vmap(
        |v| f.call(v),
        &[xa.clone(), xb.clone()],
        &[Some(0), Some(0)],
        &[0, 0, 0],
    )
    .unwrap();
    let vp = vmap(body, &[xa, xb], &[Some(0), Some(0)], &[0, 0, 0]).unwrap();
    assert_same(&vm, &vp);
}

/// A fused program whose intermediates live across many later steps (read again several steps
/// on, twice by one step, and by a `where`): the kernel reuses scratch rows once a value's last
/// reader has run, which must never hand out a row that a later step still reads.
#[test]
fn fused_values_read_long_after_they_are_made() {
    let f = |xs: &[Array]| -> Result<Vec<Array>> {
        let (x, y) = (&xs[0], &xs[1]);
        let a = ops::multiply(x, &Array::scalar(2.0f32))?; // read by the last step
        let b = ops::tanh(&a)?;
        let c = ops::add(&a, y)?;
        let d = ops::multiply(&c, &c)?; // one value twice
        let e = ops::subtract(&d, &b)?;
        let m = ops::greater(&c, &Array::scalar(0.0f32))?;
        let g = ops::where_(&m, &e, &b)?;
        let h = ops::multiply(&g, &ops::sin(&c)?)?;
        let i = ops::add(&ops::maximum(&h, &b)?, &y.clone())?;
        Ok(vec![ops::subtract(&i, &a)?])
    };
    let c = compile(f);
    for n in [1usize, 1000, 5000] {
        let ins = [rand(&[n], 10 + n as u64), rand(&[n], 20 + n as u64)];
        assert_same(&c.call(&ins).unwrap(), &f(&ins).unwrap());
    }
    let ins = [rand(&[1000], 1), rand(&[1000], 2)];
    assert_eq!(c.fused_kernels(&ins).unwrap(), 1);
}

/// Operands broadcast along leading axes (a bias of shape (d,) or (1, d), a (t, d) table under
/// (b, t, d)) join the fused kernel, which stages each chunk's repeating values; a column
/// (n, 1) does not (its values do not repeat with a period) and stays a separate node. Results
/// equal the uncompiled function bitwise, with and without a trailing reduction, for chunk
/// boundaries that fall inside rows, and under the shapeless mode across batch sizes.
#[test]
fn broadcast_operands_are_fused() {
    let f = |xs: &[Array]| -> Result<Vec<Array>> {
        let (x, b, t) = (&xs[0], &xs[1], &xs[2]);
        let h = ops::maximum(&ops::add(&ops::multiply(x, &Array::scalar(2.0f32))?, b)?, t)?;
        Ok(vec![ops::tanh(&h)?])
    };
    let c = compile(f);
    for (shape, bshape, tshape) in [
        (vec![4usize, 3], vec![3usize], vec![4usize, 3]),
        (vec![5, 7, 333], vec![1, 333], vec![7, 333]),
        (vec![3, 1100], vec![1100], vec![1, 1100]),
    ] {
        let ins = [rand(&shape, 1), rand(&bshape, 2), rand(&tshape, 3)];
        assert_same(&c.call(&ins).unwrap(), &f(&ins).unwrap());
        assert_eq!(
            c.fused_kernels(&ins).unwrap(),
            1,
            "{shape:?} {bshape:?} {tshape:?}"
        );
        assert_eq!(c.node_count(&ins).unwrap(), 1, "one node for {shape:?}");
    }
    // With a trailing reduction (short rows and rows longer than a chunk).
    let g = |xs: &[Array]| -> Result<Vec<Array>> {
        let e = ops::exp(&ops::subtract(&xs[0], &xs[1])?)?;
        Ok(vec![ops::sum(&e, Axes::Some(vec![-1]), false)?])
    };
    let cg = compile(g);
    for (shape, bshape) in [
        (vec![6usize, 10], vec![10usize]),
        (vec![3, 3000], vec![1, 3000]),
    ] {
        let ins = [rand(&shape, 4), rand(&bshape, 5)];
        assert_same(&cg.call(&ins).unwrap(), &g(&ins).unwrap());
        assert_eq!(cg.fused_kernels(&ins).unwrap(), 1);
    }
    // Columns and middle-axis broadcasts are staged per chunk: still one kernel.
    for (shape, bshape, tshape) in [
        (vec![4usize, 3], vec![4usize, 1], vec![4usize, 3]),
        (vec![3, 5, 700], vec![3, 1, 700], vec![5, 1]),
        (vec![2, 1500], vec![2, 1], vec![1]),
    ] {
        let ins = [rand(&shape, 6), rand(&bshape, 7), rand(&tshape, 8)];
        assert_same(&c.call(&ins).unwrap(), &f(&ins).unwrap());
        assert_eq!(
            c.node_count(&ins).unwrap(),
            1,
            "{shape:?} {bshape:?} {tshape:?}"
        );
    }
    // A transposed (strided) input is read through the same staging, not copied first.
    let xt = ops::transpose(&rand(&[3, 4], 12), None).unwrap();
    let ins = [xt, rand(&[3], 13), rand(&[4, 1], 14)];
    assert_same(&c.call(&ins).unwrap(), &f(&ins).unwrap());
    assert_eq!(c.node_count(&ins).unwrap(), 1);
    // Shapeless: one trace serves other batch sizes with the bias fused.
    let s = transforms::compile_shapeless(f);
    for n in [2usize, 9] {
        let ins = [rand(&[n, 5], 9), rand(&[5], 10), rand(&[n, 5], 11)];
        assert_same(&s.call(&ins).unwrap(), &f(&ins).unwrap());
        assert_eq!(s.fused_kernels(&ins).unwrap(), 1);
    }
}

/// Normalisation patterns, whose operands are per-row columns (`keepdims` reductions): softmax
/// and a layer norm, compiled, equal the eager results bit for bit, with the column operands
/// inside the fused kernels.
#[test]
fn softmax_and_layer_norm_fuse_their_column_operands() {
    let softmax = |xs: &[Array]| -> Result<Vec<Array>> {
        let x = &xs[0];
        let m = ops::max(x, Axes::Some(vec![-1]), true)?;
        let e = ops::exp(&ops::subtract(x, &m)?)?;
        let s = ops::sum(&e, Axes::Some(vec![-1]), true)?;
        Ok(vec![ops::divide(&e, &s)?])
    };
    let layer_norm = |xs: &[Array]| -> Result<Vec<Array>> {
        let (x, w, b) = (&xs[0], &xs[1], &xs[2]);
        let mu = ops::mean(x, Axes::Some(vec![-1]), true)?;
        let d = ops::subtract(x, &mu)?;
        let var = ops::mean(&ops::square(&d)?, Axes::Some(vec![-1]), true)?;
        let r = ops::rsqrt(&ops::add(&var, &Array::scalar(1e-5f32))?)?;
        Ok(vec![ops::add(
            &ops::multiply(&ops::multiply(&d, &r)?, w)?,
            b,
        )?])
    };
    let (cs, cl) = (compile(softmax), compile(layer_norm));
    for shape in [vec![3usize, 7], vec![2, 4, 1500]] {
        let x = rand(&shape, 20);
        assert_same(
            &cs.call(&[x.clone()]).unwrap(),
            &softmax(&[x.clone()]).unwrap(),
        );
        // max; x - m and exp as one kernel (their column operand inside); the sum; the division
        // (a lone op, left as it is).
        assert_eq!(cs.node_count(&[x.clone()]).unwrap(), 4, "softmax {shape:?}");
        assert_eq!(
            cs.fused_kernels(&[x.clone()]).unwrap(),
            1,
            "softmax {shape:?}"
        );
        let d = shape[shape.len() - 1];
        let ins = [x, rand(&[d], 21), rand(&[d], 22)];
        assert_same(&cl.call(&ins).unwrap(), &layer_norm(&ins).unwrap());
        // Eager: 11 nodes (each mean is a sum and a multiply). Compiled: the first sum; its
        // multiply (a column, read by a full-size op); x - mu (read by two groups); square with
        // its sum; the column chain (* 1/n, + eps, rsqrt); and d * r * w + b, which reads the
        // column r and the biases w and b inside one kernel (before columns could enter a
        // kernel, d * r stayed outside: 7 nodes).
        let compiled = cl.node_count(&ins).unwrap();
        assert_eq!(compiled, 6, "layer norm {shape:?}");
        assert_eq!(cl.fused_kernels(&ins).unwrap(), 3, "layer norm {shape:?}");
    }
}

/// Linear chains (each op reads the previous result and inputs only) of cheap ops run
/// register-tiled, others through the chunked executor; with the chain on either side of a
/// binary op and squared, every unary op must give the eager results bit for bit, on sizes with
/// and without a partial block of 64, and past 2^18 values (written with streaming stores).
#[test]
fn linear_chains_of_every_tiled_op_equal_eager() {
    use tessera_core::ops::*;
    type Un = fn(&Array) -> Result<Array>;
    let unary: [(&str, Un); 19] = [
        ("abs", abs),
        ("negative", negative),
        ("exp", exp),
        ("expm1", expm1),
        ("log", log),
        ("log1p", log1p),
        ("log2", log2),
        ("sqrt", sqrt),
        ("rsqrt", rsqrt),
        ("square", square),
        ("reciprocal", reciprocal),
        ("sin", sin),
        ("cos", cos),
        ("tanh", tanh),
        ("sigmoid", sigmoid),
        ("erf", erf),
        ("floor", floor),
        ("ceil", ceil),
        ("round", round),
    ];
    for (name, u) in unary {
        let f = move |xs: &[Array]| -> Result<Vec<Array>> {
            let (x, y) = (&xs[0], &xs[1]);
            // Keep logs and roots mostly in their domain, NaN elsewhere (also compared).
            let h = add(
                &multiply(x, &Array::scalar(0.75f32))?,
                &Array::scalar(1.0f32),
            )?;
            let h = subtract(&Array::scalar(3.0f32), &u(&h)?)?; // chain second
            let h = divide(&maximum(&h, y)?, &Array::scalar(1.5f32))?;
            let h = minimum(&multiply(&h, &h)?, &Array::scalar(4.0f32))?; // chain squared
            Ok(vec![h])
        };
        let c = compile(f);
        for n in [1000usize, 64, 65, 100_003, (1 << 18) + 77] {
            let ins = [rand(&[n], 11), rand(&[n], 12)];
            assert_same(&c.call(&ins).unwrap(), &f(&ins).unwrap());
            assert_eq!(c.fused_kernels(&ins).unwrap(), 1, "{name}");
        }
    }
}

/// `maximum` / `minimum` against a scalar that is not NaN run in shorter forms in the tiled
/// executor (one `maxps` / `minps`, or a compare and a blend): bit for bit the eager result,
/// signed zeros and NaNs included, for scalars of every kind (zeros of both signs, NaN,
/// infinities, values the inputs reach exactly), either operand order, and inputs holding the
/// special values, on sizes with and without a partial block and past 2^18 values.
#[test]
fn max_and_min_against_scalars_equal_eager_bit_for_bit() {
    type Bin = fn(&Array, &Array) -> Result<Array>;
    let special = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        0.5,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
        -1e-40,
    ];
    let scalars = [
        0.0f32,
        -0.0,
        2.0,
        -2.0,
        1.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let ops_: [(&str, Bin); 2] = [("maximum", ops::maximum), ("minimum", ops::minimum)];
    for n in [64usize, 65, 1000, (1 << 18) + 77] {
        // The special values, then random ones, in every block.
        let noise = rand(&[n], 21).to_vec::<f32>().unwrap();
        let values: Vec<f32> = (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    special[(i / 3) % special.len()]
                } else {
                    noise[i]
                }
            })
            .collect();
        let x = Array::from_vec(values, &[n]).unwrap();
        for s in scalars {
            for (name, op) in ops_ {
                for chain_second in [false, true] {
                    // x * 2 (exact), then the max / min, then a negation (keeps zero signs).
                    let f = move |xs: &[Array]| -> Result<Vec<Array>> {
                        let h = ops::multiply(&xs[0], &Array::scalar(2f32))?;
                        let c = Array::scalar(s);
                        let h = if chain_second {
                            op(&c, &h)?
                        } else {
                            op(&h, &c)?
                        };
                        Ok(vec![h.clone(), ops::negative(&h)?])
                    };
                    let compiled = compile(f);
                    let got = compiled.call(std::slice::from_ref(&x)).unwrap();
                    let want = f(std::slice::from_ref(&x)).unwrap();
                    for (g, w) in got.iter().zip(&want) {
                        let (g, w) = (g.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
                        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{name} with {s} (chain second: {chain_second}), n = {n}, \
                                 element {i}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Simplification: ops that are the identity bit for bit leave the plan, constants (subgraphs
/// that do not read the inputs) are not in it, and look-alikes that are not the identity stay.
#[test]
fn no_ops_and_constants_leave_the_plan() {
    let f = |xs: &[Array]| -> Result<Vec<Array>> {
        let x = &xs[0];
        let y = ops::multiply(x, &Array::scalar(1f32))?;
        let y = ops::subtract(&y, &Array::scalar(0f32))?;
        let y = ops::add(&Array::scalar(-0.0f32), &y)?;
        let y = ops::divide(&y, &Array::scalar(1f32))?;
        let y = ops::transpose(&y, Some(&[0, 1]))?;
        // A constant: computed once, outside the plan.
        let c = ops::exp(&ops::arange(0.0, 4.0, 1.0, Dtype::F32)?)?;
        Ok(vec![ops::add(&y, &c)?])
    };
    let c = compile(f);
    let x = Array::from_vec(
        vec![-0.0f32, 1.5, f32::NAN, -2.0, 0.0, 7.0, -1e-40, 3.0],
        &[2, 4],
    )
    .unwrap();
    assert_same(&c.call(&[x.clone()]).unwrap(), &f(&[x.clone()]).unwrap());
    assert_eq!(
        c.node_count(&[x.clone()]).unwrap(),
        1,
        "only the last add is left"
    );

    // x + 0.0 is not the identity (-0.0 + 0.0 = +0.0), nor is 1 / x or x - (-0.0).
    let g = |xs: &[Array]| -> Result<Vec<Array>> {
        let x = &xs[0];
        Ok(vec![
            ops::add(x, &Array::scalar(0f32))?,
            ops::divide(&Array::scalar(1f32), x)?,
            ops::subtract(x, &Array::scalar(-0.0f32))?,
        ])
    };
    let cg = compile(g);
    assert_same(&cg.call(&[x.clone()]).unwrap(), &g(&[x.clone()]).unwrap());
    assert_eq!(cg.node_count(&[x.clone()]).unwrap(), 3);
    assert_eq!(
        cg.call(&[x.clone()]).unwrap()[0].to_vec::<f32>().unwrap()[0].to_bits(),
        0f32.to_bits()
    );
    // Integers: x + 0 and x * 1 are the identity; a cast to f32 and back is not removed.
    let h = |xs: &[Array]| -> Result<Vec<Array>> {
        let i = ops::add(
            &ops::multiply(&xs[0], &Array::scalar(1i32))?,
            &Array::scalar(0i32),
        )?;
        Ok(vec![i.astype(Dtype::F32)?.astype(Dtype::I32)?])
    };
    let ch = compile(h);
    let xi = Array::from_vec(vec![3i32, -7, i32::MAX], &[3]).unwrap();
    assert_same(&ch.call(&[xi.clone()]).unwrap(), &h(&[xi.clone()]).unwrap());
    assert_eq!(ch.node_count(&[xi]).unwrap(), 2, "the two casts");
}
