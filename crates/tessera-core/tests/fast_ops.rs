//! The fused transformer ops (rms_norm, layer_norm, rope) against their compositions of plain ops: values on
//! contiguous, strided and low-precision inputs, gradients (the fused vjp rules against autodiff
//! of the composite), vmap, and argument errors.
#![allow(clippy::unwrap_used)]

use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{grad, vmap};
use tessera_core::{Array, Dtype, Result, random};

fn rand(shape: &[usize], seed: u64) -> Array {
    random::normal(shape, Dtype::F32, 0.0, 1.0, Some(&random::key(seed))).unwrap()
}

fn close(a: &Array, b: &Array, tol: f32) {
    assert_eq!(a.shape(), b.shape());
    let (x, y) = (
        ops::astype(a, Dtype::F32).unwrap().to_vec::<f32>().unwrap(),
        ops::astype(b, Dtype::F32).unwrap().to_vec::<f32>().unwrap(),
    );
    let worst = x
        .iter()
        .zip(&y)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "max difference {worst} > {tol}");
}

fn rms_composite(x: &Array, w: Option<&Array>, eps: f64) -> Result<Array> {
    let x64 = ops::astype(x, Dtype::F64)?;
    let w64 = w.map(|w| ops::astype(w, Dtype::F64)).transpose()?;
    ops::rms_norm(&x64, w64.as_ref(), eps)
}

#[test]
fn rms_norm_matches_the_composite() {
    let x = rand(&[3, 5, 64], 1);
    let w = rand(&[64], 2);
    close(
        &ops::rms_norm(&x, Some(&w), 1e-5).unwrap(),
        &rms_composite(&x, Some(&w), 1e-5).unwrap(),
        2e-5,
    );
    close(
        &ops::rms_norm(&x, None, 1e-6).unwrap(),
        &rms_composite(&x, None, 1e-6).unwrap(),
        2e-5,
    );
    // Strided input: the transpose of a (64, 7) array normalised over its last axis.
    let xt = ops::transpose(&rand(&[64, 7], 3), None).unwrap();
    close(
        &ops::rms_norm(&xt, Some(&w), 1e-5).unwrap(),
        &rms_composite(&xt, Some(&w), 1e-5).unwrap(),
        2e-5,
    );
    // bf16 input comes back in bf16.
    let xb = ops::astype(&x, Dtype::BF16).unwrap();
    let yb = ops::rms_norm(&xb, Some(&w), 1e-5).unwrap();
    assert_eq!(yb.dtype(), Dtype::BF16);
    close(&yb, &rms_composite(&xb, Some(&w), 1e-5).unwrap(), 3e-2);
}

#[test]
fn rope_matches_the_composite() {
    for interleaved in [false, true] {
        for (d, r) in [(16, 8), (16, 4)] {
            let x = rand(&[2, 5, 3, d], 4);
            let ang =
                random::uniform(-3.0, 3.0, &[5, r], Dtype::F32, Some(&random::key(5))).unwrap();
            let (c, s) = (ops::cos(&ang).unwrap(), ops::sin(&ang).unwrap());
            let want =
                ops::rope_composite(&ops::astype(&x, Dtype::F64).unwrap(), &c, &s, interleaved)
                    .unwrap();
            close(&ops::rope(&x, &c, &s, interleaved).unwrap(), &want, 1e-5);
            // Strided: positions and heads swapped in memory.
            let xs = ops::swapaxes(
                &ops::contiguous(&ops::swapaxes(&x, 1, 2).unwrap()).unwrap(),
                1,
                2,
            )
            .unwrap();
            close(&ops::rope(&xs, &c, &s, interleaved).unwrap(), &want, 1e-5);
        }
    }
}

#[test]
fn rope_is_a_rotation_and_its_gradient_rotates_back() {
    let x = rand(&[1, 4, 2, 8], 6);
    let ang = rand(&[4, 4], 7);
    let (c, s) = (ops::cos(&ang).unwrap(), ops::sin(&ang).unwrap());
    for interleaved in [false, true] {
        let y = ops::rope(&x, &c, &s, interleaved).unwrap();
        // Norms are preserved.
        let n = |a: &Array| {
            ops::sum(&ops::square(a).unwrap(), Axes::All, false)
                .unwrap()
                .item::<f32>()
                .unwrap()
        };
        assert!((n(&y) - n(&x)).abs() < 1e-3 * n(&x));
        // Gradient of sum(rope(x) * w) is the inverse rotation of w: compare with the composite.
        let w = rand(y.shape(), 8);
        let fused = grad(
            |a: &[Array]| {
                ops::sum(
                    &ops::multiply(&ops::rope(&a[0], &c, &s, interleaved)?, &w)?,
                    Axes::All,
                    false,
                )
            },
            &[x.clone()],
        )
        .unwrap();
        let comp = grad(
            |a: &[Array]| {
                ops::sum(
                    &ops::multiply(&ops::rope_composite(&a[0], &c, &s, interleaved)?, &w)?,
                    Axes::All,
                    false,
                )
            },
            &[x.clone()],
        )
        .unwrap();
        close(&fused[0], &comp[0], 1e-5);
    }
}

#[test]
fn rms_norm_gradients_match_autodiff_of_the_composite() {
    let x = rand(&[4, 32], 9);
    let w = rand(&[32], 10);
    let g = rand(&[4, 32], 11);
    let loss = |f: fn(&Array, Option<&Array>, f64) -> Result<Array>| {
        let g = g.clone();
        move |a: &[Array]| {
            ops::sum(
                &ops::multiply(&f(&a[0], Some(&a[1]), 1e-5)?, &g)?,
                Axes::All,
                false,
            )
        }
    };
    let composite = |x: &Array, w: Option<&Array>, eps: f64| -> Result<Array> {
        let ms = ops::mean(&ops::square(x)?, -1, true)?;
        let y = ops::multiply(x, &ops::rsqrt(&ops::add(&ms, &Array::scalar(eps as f32))?)?)?;
        ops::multiply(&y, w.unwrap())
    };
    let fused = grad(loss(ops::rms_norm), &[x.clone(), w.clone()]).unwrap();
    let comp = grad(loss(composite), &[x.clone(), w.clone()]).unwrap();
    close(&fused[0], &comp[0], 1e-4);
    close(&fused[1], &comp[1], 1e-4);
}

/// Layer norm written with plain ops (biased variance, as PyTorch), in the dtype of `x`.
fn layer_norm_composite(
    x: &Array,
    w: Option<&Array>,
    b: Option<&Array>,
    eps: f64,
) -> Result<Array> {
    let d = ops::subtract(x, &ops::mean(x, -1, true)?)?;
    let var = ops::mean(&ops::square(&d)?, -1, true)?;
    let mut y = ops::multiply(
        &d,
        &ops::rsqrt(&ops::add(&var, &Array::scalar_of(eps, x.dtype()))?)?,
    )?;
    if let Some(w) = w {
        y = ops::multiply(&y, &ops::astype(w, x.dtype())?)?;
    }
    if let Some(b) = b {
        y = ops::add(&y, &ops::astype(b, x.dtype())?)?;
    }
    Ok(y)
}

#[test]
fn layer_norm_matches_the_composite() {
    // An offset so the mean matters (a kernel that skipped it would fail).
    let x = ops::add(&rand(&[3, 5, 64], 31), &Array::scalar(3.0f32)).unwrap();
    let (w, b) = (rand(&[64], 32), rand(&[64], 33));
    let x64 = ops::astype(&x, Dtype::F64).unwrap();
    for (wo, bo) in [
        (Some(&w), Some(&b)),
        (Some(&w), None),
        (None, Some(&b)),
        (None, None),
    ] {
        close(
            &ops::layer_norm(&x, wo, bo, 1e-5).unwrap(),
            &layer_norm_composite(&x64, wo, bo, 1e-5).unwrap(),
            3e-5,
        );
    }
    // f64 takes the composite path of the op itself.
    close(
        &ops::layer_norm(&x64, Some(&w), Some(&b), 1e-5).unwrap(),
        &layer_norm_composite(&x64, Some(&w), Some(&b), 1e-5).unwrap(),
        1e-6,
    );
    // Strided input, and an intermediate the kernel may overwrite in place.
    let xt = ops::transpose(&rand(&[64, 7], 34), None).unwrap();
    close(
        &ops::layer_norm(&xt, Some(&w), Some(&b), 1e-5).unwrap(),
        &layer_norm_composite(
            &ops::astype(&xt, Dtype::F64).unwrap(),
            Some(&w),
            Some(&b),
            1e-5,
        )
        .unwrap(),
        3e-5,
    );
    let fresh = ops::multiply(&x, &Array::scalar(1.0f32)).unwrap();
    close(
        &ops::layer_norm(&fresh, Some(&w), Some(&b), 1e-5).unwrap(),
        &layer_norm_composite(&x64, Some(&w), Some(&b), 1e-5).unwrap(),
        3e-5,
    );
    // bf16 in, bf16 out.
    let yb = ops::layer_norm(
        &ops::astype(&x, Dtype::BF16).unwrap(),
        Some(&w),
        Some(&b),
        1e-5,
    )
    .unwrap();
    assert_eq!(yb.dtype(), Dtype::BF16);
    close(
        &yb,
        &layer_norm_composite(&x64, Some(&w), Some(&b), 1e-5).unwrap(),
        5e-2,
    );
    // Errors name the op.
    let e = ops::layer_norm(&x, Some(&rand(&[7], 1)), None, 1e-5).unwrap_err();
    assert!(e.to_string().contains("layer_norm"), "{e}");
    assert!(ops::layer_norm(&x, None, Some(&rand(&[63], 1)), 1e-5).is_err());
    assert!(ops::layer_norm(&x, None, None, f64::NAN).is_err());
}

#[test]
fn layer_norm_gradients_match_autodiff_of_the_composite() {
    let x = rand(&[4, 32], 35);
    let (w, b) = (rand(&[32], 36), rand(&[32], 37));
    let g = rand(&[4, 32], 38);
    type Ln = fn(&Array, Option<&Array>, Option<&Array>, f64) -> Result<Array>;
    let loss = |f: Ln| {
        let g = g.clone();
        move |a: &[Array]| {
            ops::sum(
                &ops::multiply(&f(&a[0], Some(&a[1]), Some(&a[2]), 1e-5)?, &g)?,
                Axes::All,
                false,
            )
        }
    };
    let args = [x.clone(), w.clone(), b.clone()];
    let fused = grad(loss(ops::layer_norm), &args).unwrap();
    let comp = grad(loss(layer_norm_composite), &args).unwrap();
    for (f, c) in fused.iter().zip(&comp) {
        close(f, c, 1e-4);
    }
    // vmap over x with shared parameters.
    let xs = rand(&[3, 2, 32], 39);
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        Ok(vec![ops::layer_norm(&a[0], Some(&w), Some(&b), 1e-5)?])
    };
    let batched = vmap(f, &[xs.clone()], &[Some(0)], &[0]).unwrap();
    close(
        &batched[0],
        &ops::layer_norm(&xs, Some(&w), Some(&b), 1e-5).unwrap(),
        1e-6,
    );
}

#[test]
fn vmap_over_x() {
    let xs = rand(&[3, 2, 16], 12);
    let w = rand(&[16], 13);
    let f = |a: &[Array]| -> Result<Vec<Array>> { Ok(vec![ops::rms_norm(&a[0], Some(&w), 1e-5)?]) };
    let batched = vmap(f, &[xs.clone()], &[Some(0)], &[0]).unwrap();
    close(
        &batched[0],
        &ops::rms_norm(&xs, Some(&w), 1e-5).unwrap(),
        1e-6,
    );
}

#[test]
fn bad_arguments_are_errors() {
    let x = rand(&[2, 8], 14);
    assert!(ops::rms_norm(&x, Some(&rand(&[7], 1)), 1e-5).is_err());
    assert!(ops::rms_norm(&x, None, -1.0).is_err());
    assert!(ops::rms_norm(&Array::from_slice(&[1i32, 2], &[2]).unwrap(), None, 1e-5).is_err());
    let x4 = rand(&[1, 3, 2, 8], 15);
    assert!(ops::rope(&x4, &rand(&[2, 4], 1), &rand(&[2, 4], 2), false).is_err()); // t mismatch
    assert!(ops::rope(&x4, &rand(&[3, 5], 1), &rand(&[3, 5], 2), false).is_err()); // 2r > d
    assert!(ops::rope(&x, &rand(&[2, 4], 1), &rand(&[2, 4], 2), false).is_err()); // rank
}

/// The additive causal mask of `t` queries at the last `t` of `l` positions.
fn causal_mask(t: usize, l: usize) -> Array {
    let m: Vec<f32> = (0..t * l)
        .map(|x| {
            let (i, j) = (x / l, x % l);
            if j > l - t + i {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Array::from_vec(m, &[t, l]).unwrap()
}

#[test]
fn sdpa_matches_the_composite() {
    // Grouped-query: 4 query heads over 2 kv heads; keys and values are a strided view into a
    // larger cache buffer (positions 0..9 of 16), as the KV cache hands them out.
    let q = rand(&[2, 4, 3, 8], 20);
    let cache_k = rand(&[2, 2, 16, 8], 21);
    let cache_v = rand(&[2, 2, 16, 8], 22);
    let k = ops::slice_axis(&cache_k, 2, 0, 9).unwrap();
    let v = ops::slice_axis(&cache_v, 2, 0, 9).unwrap();
    let mask = causal_mask(3, 9);
    for mk in [None, Some(&mask)] {
        let fused = ops::sdpa(&q, &k, &v, 0.35, mk).unwrap();
        let comp = ops::sdpa_composite(&q, &k, &v, 0.35, mk).unwrap();
        close(&fused, &comp, 2e-5);
    }
    // Query positions from a transposed (b, t, h, d) layout.
    let qt = ops::swapaxes(&rand(&[2, 3, 4, 8], 23), 1, 2).unwrap();
    close(
        &ops::sdpa(&qt, &k, &v, 0.5, None).unwrap(),
        &ops::sdpa_composite(&qt, &k, &v, 0.5, None).unwrap(),
        2e-5,
    );
}

/// Prompt-sized calls: 12 positions (the row kernels) and 40 (the tiled kernel where the CPU
/// has it) of 6 query heads over 2 kv heads, keys and values a strided view of a longer f32 or
/// f16 cache (8 positions cached before the prompt), with and without a causal mask.
#[test]
fn sdpa_prompts_match_the_composite() {
    for t in [12, 40] {
        // The tiled kernel may run on the AMX tiles, whose split-bf16 products keep about 16
        // significant bits of each operand (`attention_amx.rs`): measured up to 3.3e-5 here;
        // its f32 kernels are held to 2e-5 of an f64 reference by their unit test.
        let tol = if t >= 16 { 1e-4 } else { 2e-5 };
        let q = rand(&[1, 6, t, 32], 30);
        let l = t + 8;
        let mask = causal_mask(t, l);
        for dtype in [Dtype::F32, Dtype::F16] {
            let cache = |seed| {
                let c = ops::astype(&rand(&[1, 2, 64, 32], seed), dtype).unwrap();
                ops::slice_axis(&c, 2, 0, l).unwrap()
            };
            let (k, v) = (cache(31), cache(32));
            for mk in [None, Some(&mask)] {
                let fused = ops::sdpa(&q, &k, &v, 0.25, mk).unwrap();
                let comp = ops::sdpa_composite(&q, &k, &v, 0.25, mk).unwrap();
                close(&fused, &comp, tol);
            }
        }
    }
}

/// vmap over q, k and v (the mapped axis folded into the batch axis) and over q alone (k and v
/// shared), with a shared mask, against the calls one by one.
#[test]
fn vmap_of_sdpa_matches_the_calls_one_by_one() {
    let (qs, ks, vs) = (
        rand(&[3, 1, 4, 20, 16], 33),
        rand(&[3, 1, 2, 24, 16], 34),
        rand(&[3, 1, 2, 24, 16], 35),
    );
    let mask = causal_mask(20, 24);
    let one = |i: usize, shared_kv: bool| {
        let pick = |x: &Array, i: usize| {
            ops::squeeze(&ops::slice_axis(x, 0, i, i + 1).unwrap(), Axes::from(0)).unwrap()
        };
        let (k, v) = if shared_kv {
            (pick(&ks, 0), pick(&vs, 0))
        } else {
            (pick(&ks, i), pick(&vs, i))
        };
        ops::sdpa(&pick(&qs, i), &k, &v, 0.3, Some(&mask)).unwrap()
    };
    let m2 = mask.clone();
    let all = vmap(
        move |a: &[Array]| -> Result<Vec<Array>> {
            Ok(vec![ops::sdpa(&a[0], &a[1], &a[2], 0.3, Some(&m2))?])
        },
        &[qs.clone(), ks.clone(), vs.clone()],
        &[Some(0), Some(0), Some(0)],
        &[0],
    )
    .unwrap();
    let want: Vec<Array> = (0..3).map(|i| one(i, false)).collect();
    close(&all[0], &ops::stack(&want, 0).unwrap(), 1e-6);
    let k0 = ops::squeeze(&ops::slice_axis(&ks, 0, 0, 1).unwrap(), Axes::from(0)).unwrap();
    let v0 = ops::squeeze(&ops::slice_axis(&vs, 0, 0, 1).unwrap(), Axes::from(0)).unwrap();
    let m3 = mask.clone();
    let shared = vmap(
        move |a: &[Array]| -> Result<Vec<Array>> {
            Ok(vec![ops::sdpa(&a[0], &a[1], &a[2], 0.3, Some(&m3))?])
        },
        &[qs.clone(), k0, v0],
        &[Some(0), None, None],
        &[0],
    )
    .unwrap();
    let want: Vec<Array> = (0..3).map(|i| one(i, true)).collect();
    close(&shared[0], &ops::stack(&want, 0).unwrap(), 1e-6);
}

#[test]
fn sdpa_gradients_match_the_composite() {
    let q = rand(&[1, 2, 2, 4], 24);
    let k = rand(&[1, 1, 5, 4], 25);
    let v = rand(&[1, 1, 5, 4], 26);
    let w = rand(&[1, 2, 2, 4], 27);
    let f = |fused: bool| {
        let w = w.clone();
        move |a: &[Array]| {
            let o = if fused {
                ops::sdpa(&a[0], &a[1], &a[2], 0.7, None)?
            } else {
                ops::sdpa_composite(&a[0], &a[1], &a[2], 0.7, None)?
            };
            ops::sum(&ops::multiply(&o, &w)?, Axes::All, false)
        }
    };
    let inputs = [q, k, v];
    let a = grad(f(true), &inputs).unwrap();
    let b = grad(f(false), &inputs).unwrap();
    for (x, y) in a.iter().zip(&b) {
        close(x, y, 1e-5);
    }
}

#[test]
fn sdpa_bad_arguments_are_errors() {
    let q = rand(&[1, 3, 2, 4], 1);
    let k = rand(&[1, 2, 5, 4], 2);
    assert!(ops::sdpa(&q, &k, &k, 1.0, None).is_err()); // 3 heads over 2 kv heads
    let q2 = rand(&[1, 2, 2, 4], 3);
    assert!(ops::sdpa(&q2, &k, &rand(&[1, 2, 4, 4], 4), 1.0, None).is_err()); // k != v
    assert!(ops::sdpa(&q2, &k, &k, 1.0, Some(&rand(&[2, 4], 5))).is_err()); // mask shape
}
