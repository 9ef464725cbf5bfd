//! MLX-style affine quantization: golden values from MLX itself
//! (`scripts/gen-affine-quant-fixtures.py`), round-trip bounds, the quantized product against
//! dequantize-then-matmul (under every SIMD level: the test re-runs itself with
//! `TESSERA_SIMD=scalar` and `avx2`), gradients against finite differences, vmap, and errors.

#![allow(clippy::unwrap_used)]

use half::{bf16, f16};
use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{grad, jvp, vjp, vmap};
use tessera_core::{Array, Dtype, Result};

const BITS: [u32; 7] = [1, 2, 3, 4, 5, 6, 8];
const GROUPS: [usize; 3] = [32, 64, 128];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (xorshift): uniform in [-1, 1) and roughly normal values.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 0.866
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

fn arr(v: &[f32], shape: &[usize]) -> Array {
    Array::from_slice(v, shape).unwrap()
}

fn f32s(a: &Array) -> Vec<f32> {
    a.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap()
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 character {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// An array of `dtype` ("f32", "bf16", "f16", "u32") from base64 little-endian bytes.
fn decode(b64: &str, dtype: &str, shape: &[usize]) -> Array {
    let raw = base64(b64);
    match dtype {
        "f32" => {
            let v: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Array::from_slice(&v, shape).unwrap()
        }
        "u32" => {
            let v: Vec<u32> = raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Array::from_slice(&v, shape).unwrap()
        }
        "bf16" => {
            let v: Vec<bf16> = raw
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            Array::from_slice(&v, shape).unwrap()
        }
        "f16" => {
            let v: Vec<f16> = raw
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            Array::from_slice(&v, shape).unwrap()
        }
        other => panic!("unknown dtype {other}"),
    }
}

/// Bit patterns of a float array (exact comparisons, NaN-safe).
fn bit_patterns(a: &Array) -> Vec<u32> {
    match a.dtype() {
        Dtype::F32 => a
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect(),
        Dtype::BF16 => a
            .to_vec::<bf16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u32)
            .collect(),
        Dtype::F16 => a
            .to_vec::<f16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u32)
            .collect(),
        d => panic!("not a float array: {d}"),
    }
}

/// Unit roundoff of a float dtype.
fn unit(d: Dtype) -> f64 {
    match d {
        Dtype::BF16 => 2f64.powi(-8),
        Dtype::F16 => 2f64.powi(-11),
        _ => 2f64.powi(-24),
    }
}

/// Checks `got` against `want` element-wise with the bound for an f32 dot product of length
/// `k` (`k u Σ|x||w|`, doubled since the reference has its own rounding), plus `2^-16 Σ|x||w|`
/// for the AVX-512 BF16 kernels, which multiply f32 activations as the sum of two bf16 (16
/// significant bits), plus the rounding of the output to `dtype` (`u_dtype |want|`). `mag`
/// holds `Σ|x||w|` per output.
fn assert_close(what: &str, got: &[f32], want: &[f64], mag: &[f64], k: usize, dtype: Dtype) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = (2.0 * k as f64 * unit(Dtype::F32) + 2f64.powi(-16)) * m
            + 1.01 * unit(dtype) * w.abs()
            + 1e-30;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: {g} vs {w} (tolerance {tol:e})"
        );
    }
}

/// `x @ Wᵀ` (or `x @ W`) in f64 with `Σ|x||w|` per output, from f32 values of x (m × k) and W.
fn dense_ref(
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    transpose: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for t in 0..k {
                let wv = if transpose {
                    w[j * k + t]
                } else {
                    w[t * n + j]
                } as f64;
                let xv = x[i * k + t] as f64;
                y[i * n + j] += xv * wv;
                mag[i * n + j] += (xv * wv).abs();
            }
        }
    }
    (y, mag)
}

// ---------------------------------------------------------------------------------------------
// Golden values from MLX
// ---------------------------------------------------------------------------------------------

fn fixtures() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/affine_quant/mlx.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn golden_quantize_dequantize_matmul_vs_mlx() {
    let doc = fixtures();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 63);
    let mut matmuls = 0;
    for c in cases {
        let dt = c["dtype"].as_str().unwrap();
        let bits = c["bits"].as_u64().unwrap() as u32;
        let gs = c["group_size"].as_u64().unwrap() as usize;
        let (rows, cols) = (
            c["shape"][0].as_u64().unwrap() as usize,
            c["shape"][1].as_u64().unwrap() as usize,
        );
        let name = format!("{dt} bits={bits} group_size={gs}");
        let w = decode(c["w"].as_str().unwrap(), dt, &[rows, cols]);
        let wq_mlx = decode(
            c["w_q"].as_str().unwrap(),
            "u32",
            &[rows, cols * bits as usize / 32],
        );
        let s_mlx = decode(c["scales"].as_str().unwrap(), dt, &[rows, cols / gs]);
        let b_mlx = decode(c["biases"].as_str().unwrap(), dt, &[rows, cols / gs]);

        // quantize: exact words, scales and biases.
        let (wq, s, b) = ops::quantize(&w, gs, bits).unwrap();
        assert_eq!(wq.shape(), wq_mlx.shape(), "{name}: w_q shape");
        assert_eq!(
            wq.to_vec::<u32>().unwrap(),
            wq_mlx.to_vec::<u32>().unwrap(),
            "{name}: w_q"
        );
        assert_eq!(s.dtype(), w.dtype());
        assert_eq!(bit_patterns(&s), bit_patterns(&s_mlx), "{name}: scales");
        assert_eq!(bit_patterns(&b), bit_patterns(&b_mlx), "{name}: biases");

        // dequantize MLX's arrays: bit-equal to MLX.
        let deq = ops::dequantize(&wq_mlx, &s_mlx, &b_mlx, gs, bits).unwrap();
        assert_eq!(deq.dtype(), w.dtype());
        if let Some(d) = c.get("dequantized") {
            let want = decode(d.as_str().unwrap(), dt, &[rows, cols]);
            assert_eq!(
                bit_patterns(&deq),
                bit_patterns(&want),
                "{name}: dequantize"
            );
        }

        // quantized_matmul, both layouts.
        if let Some(xs) = c.get("x") {
            matmuls += 1;
            let m = c["m"].as_u64().unwrap() as usize;
            let x = decode(xs.as_str().unwrap(), dt, &[m, cols]);
            let want: Vec<f64> = f32s(&decode(c["y"].as_str().unwrap(), "f32", &[m, rows]))
                .iter()
                .map(|&v| v as f64)
                .collect();
            let y = ops::quantized_matmul(&x, &wq_mlx, &s_mlx, &b_mlx, true, gs, bits).unwrap();
            assert_eq!(y.shape(), &[m, rows]);
            assert_eq!(y.dtype(), w.dtype(), "{name}: output dtype");
            let (_, mag) = dense_ref(&f32s(&x), &f32s(&deq), m, cols, rows, true);
            assert_close(
                &format!("{name} x@Wᵀ"),
                &f32s(&y),
                &want,
                &mag,
                cols,
                y.dtype(),
            );

            let m2 = c["m2"].as_u64().unwrap() as usize;
            let x2 = decode(c["x2"].as_str().unwrap(), dt, &[m2, rows]);
            let want2: Vec<f64> = f32s(&decode(c["y2"].as_str().unwrap(), "f32", &[m2, cols]))
                .iter()
                .map(|&v| v as f64)
                .collect();
            let y2 = ops::quantized_matmul(&x2, &wq_mlx, &s_mlx, &b_mlx, false, gs, bits).unwrap();
            assert_eq!(y2.shape(), &[m2, cols]);
            let (_, mag2) = dense_ref(&f32s(&x2), &f32s(&deq), m2, rows, cols, false);
            assert_close(
                &format!("{name} x@W"),
                &f32s(&y2),
                &want2,
                &mag2,
                rows,
                y2.dtype(),
            );
        }
    }
    assert_eq!(matmuls, 21 + 12);
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn round_trip_error_bounds() {
    let mut rng = Rng(42);
    let (rows, cols) = (8, 256);
    for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
        for bits in BITS {
            for gs in GROUPS {
                let name = format!("{dtype} bits={bits} group_size={gs}");
                let w = arr(&rng.vec(rows * cols), &[rows, cols])
                    .astype(dtype)
                    .unwrap();
                let (wq, s, b) = ops::quantize(&w, gs, bits).unwrap();
                let back = f32s(&ops::dequantize(&wq, &s, &b, gs, bits).unwrap());
                let (wv, sv, bv) = (f32s(&w), f32s(&s), f32s(&b));
                let mut sum_err = 0f64;
                let mut sum_scale = 0f64;
                let mut sum_rounding = 0f64;
                for (j, (&orig, &got)) in wv.iter().zip(&back).enumerate() {
                    let g = j / gs;
                    let scale = sv[g].abs() as f64;
                    // Half a step from rounding; up to a whole step where the range end opposite
                    // the exact edge is clamped (scale = edge / round(edge / s) can be up to
                    // 1/16 smaller than s); plus the rounding of scale·q and bias to the dtype.
                    let rounding = 2.0 * unit(dtype) * (orig.abs() as f64 + bv[g].abs() as f64);
                    let bound = if bits == 1 { 0.5 } else { 1.0 } * scale + rounding + 1e-6;
                    sum_rounding += rounding;
                    let err = (orig as f64 - got as f64).abs();
                    assert!(
                        err <= bound,
                        "{name}[{j}]: {orig} -> {got} (bound {bound:e})"
                    );
                    sum_err += err;
                    sum_scale += scale;
                }
                // On average about a quarter of a step (uniform rounding error), plus, for half
                // types, the rounding of the parameters (MLX computes the codes with the f32
                // scale, then stores it rounded: 8-bit codes magnify that by up to 255).
                // (One bit: two levels at the ends of the range, and normal values sit mostly
                // in between, about a third of the range from either end.)
                let mean_ratio = (sum_err - 0.5 * sum_rounding).max(0.0) / sum_scale;
                let limit = if bits == 1 { 0.4 } else { 0.3 };
                assert!(mean_ratio < limit, "{name}: mean error {mean_ratio} steps");
                if dtype == Dtype::F32 && bits > 1 {
                    // The value of largest magnitude in each group is reproduced exactly.
                    for g in 0..rows * cols / gs {
                        let grp = &wv[g * gs..(g + 1) * gs];
                        let (j, _) = grp.iter().enumerate().fold((0, 0f32), |(bj, bv), (j, v)| {
                            if v.abs() > bv { (j, v.abs()) } else { (bj, bv) }
                        });
                        assert_eq!(back[g * gs + j], grp[j], "{name}: group {g} edge");
                    }
                }
            }
        }
    }
}

#[test]
fn quantize_any_leading_dims_and_strided_input() {
    let mut rng = Rng(9);
    let w = arr(&rng.vec(2 * 3 * 64), &[2, 3, 64]);
    let (wq, s, b) = ops::quantize(&w, 32, 4).unwrap();
    assert_eq!(
        (wq.shape(), s.shape(), b.shape()),
        (&[2, 3, 8][..], &[2, 3, 2][..], &[2, 3, 2][..])
    );
    let flat = ops::reshape(&w, &[6, 64]).unwrap();
    let (wq2, _, _) = ops::quantize(&flat, 32, 4).unwrap();
    assert_eq!(wq.to_vec::<u32>().unwrap(), wq2.to_vec::<u32>().unwrap());
    // A transposed (non-contiguous) input quantizes like its contiguous copy.
    let t = ops::transpose(&arr(&rng.vec(64 * 4), &[64, 4]), None).unwrap();
    let (a, sa, _) = ops::quantize(&t, 64, 3).unwrap();
    let (c, sc, _) = ops::quantize(&ops::contiguous(&t).unwrap(), 64, 3).unwrap();
    assert_eq!(a.to_vec::<u32>().unwrap(), c.to_vec::<u32>().unwrap());
    assert_eq!(sa.to_vec::<f32>().unwrap(), sc.to_vec::<f32>().unwrap());
}

// ---------------------------------------------------------------------------------------------
// The product against dequantize-then-matmul
// ---------------------------------------------------------------------------------------------

/// Random shapes for both layouts, f32 and bf16 activations, every format; the kernels follow
/// `TESSERA_SIMD` (see `simd_levels`).
#[test]
fn random_shapes_match_dense() {
    let mut rng = Rng(1234);
    for bits in BITS {
        for gs in GROUPS {
            for m in 1..=9 {
                let transpose = m % 2 == 1;
                let groups = 1 + (rng.next() % 3) as usize;
                let other = 1 + (rng.next() % 40) as usize;
                let (k, n) = if transpose {
                    (gs * groups, other)
                } else {
                    (other, gs * groups)
                };
                let (rows, cols) = if transpose { (n, k) } else { (k, n) };
                let w = arr(&rng.vec(rows * cols), &[rows, cols]);
                let (wq, s, b) = ops::quantize(&w, gs, bits).unwrap();
                let deq = ops::dequantize(&wq, &s, &b, gs, bits).unwrap();
                let dv = f32s(&deq);
                for dtype in [Dtype::F32, Dtype::BF16] {
                    let x = arr(&rng.vec(m * k), &[m, k]).astype(dtype).unwrap();
                    let (s, b) = (s.astype(dtype).unwrap(), b.astype(dtype).unwrap());
                    // The reference uses the exact affine values of the (possibly rounded)
                    // parameters, which is what the kernels multiply by (MLX's dequantize
                    // would round them to the dtype).
                    let (s32, b32) = (s.astype(Dtype::F32).unwrap(), b.astype(Dtype::F32).unwrap());
                    let dvr = f32s(&ops::dequantize(&wq, &s32, &b32, gs, bits).unwrap());
                    let dv = if dtype == Dtype::F32 { &dv } else { &dvr };
                    let y = ops::quantized_matmul(&x, &wq, &s, &b, transpose, gs, bits).unwrap();
                    assert_eq!(y.shape(), &[m, n]);
                    assert_eq!(y.dtype(), dtype);
                    let (want, mag) = dense_ref(&f32s(&x), dv, m, k, n, transpose);
                    let name = format!(
                        "bits={bits} gs={gs} m={m} k={k} n={n} transpose={transpose} {dtype}"
                    );
                    assert_close(&name, &f32s(&y), &want, &mag, k, dtype);
                }
            }
        }
    }
}

/// Prefill-sized products (the tile + GEMM path) and batched leading dims.
#[test]
fn large_m_and_batched_x() {
    let mut rng = Rng(77);
    for (bits, gs) in [(4, 64), (8, 128), (3, 32)] {
        let (m, k, n) = (37, 640, 130);
        let w = arr(&rng.vec(n * k), &[n, k]);
        let (wq, s, b) = ops::quantize(&w, gs, bits).unwrap();
        let dv = f32s(&ops::dequantize(&wq, &s, &b, gs, bits).unwrap());
        let x = arr(&rng.vec(m * k), &[m, k]);
        let y = ops::quantized_matmul(&x, &wq, &s, &b, true, gs, bits).unwrap();
        let (want, mag) = dense_ref(&f32s(&x), &dv, m, k, n, true);
        assert_close("prefill", &f32s(&y), &want, &mag, k, Dtype::F32);
        // (.., k) inputs: leading dims are flattened and restored.
        let x3 = ops::reshape(
            &ops::slice(&x, &[0, 0], &[36, k as isize], &[1, 1]).unwrap(),
            &[3, 12, k],
        )
        .unwrap();
        let y3 = ops::quantized_matmul(&x3, &wq, &s, &b, true, gs, bits).unwrap();
        assert_eq!(y3.shape(), &[3, 12, n]);
        assert_close(
            "batched",
            &f32s(&y3),
            &want[..36 * n],
            &mag[..36 * n],
            k,
            Dtype::F32,
        );
        // A strided x (every other row of a bigger array).
        let xs = ops::slice(&x, &[0, 0], &[37, k as isize], &[2, 1]).unwrap();
        let ys = ops::quantized_matmul(&xs, &wq, &s, &b, true, gs, bits).unwrap();
        let rows: Vec<f64> = (0..19)
            .flat_map(|i| want[2 * i * n..(2 * i + 1) * n].to_vec())
            .collect();
        let mags: Vec<f64> = (0..19)
            .flat_map(|i| mag[2 * i * n..(2 * i + 1) * n].to_vec())
            .collect();
        assert_close("strided", &f32s(&ys), &rows, &mags, k, Dtype::F32);
    }
}

/// Re-runs the product tests in child processes with every lower SIMD level (the level is read
/// once per process), so the AVX2 and portable kernels are checked end to end too.
#[test]
fn simd_levels() {
    if std::env::var_os("TESSERA_SIMD").is_some() {
        return; // already a child (or pinned by the user)
    }
    let exe = std::env::current_exe().unwrap();
    for level in ["scalar", "avx2"] {
        for test in [
            "random_shapes_match_dense",
            "large_m_and_batched_x",
            "golden_quantize_dequantize_matmul_vs_mlx",
        ] {
            let out = std::process::Command::new(&exe)
                .args(["--exact", test, "--test-threads", "1"])
                .env("TESSERA_SIMD", level)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{test} with TESSERA_SIMD={level} failed:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transforms
// ---------------------------------------------------------------------------------------------

/// Central differences of a loss at `inputs[i]` against its gradient. The losses used here are
/// linear in the perturbed input, so differences are exact up to f32 rounding of the loss.
fn check_grad(
    name: &str,
    loss: &dyn Fn(&[Array]) -> Result<Array>,
    inputs: &[Array],
    which: &[usize],
) {
    let g = grad(loss, inputs).unwrap();
    let h = 0.25f32;
    for &i in which {
        let base = f32s(&inputs[i]);
        let gv = f32s(&g[i]);
        assert_eq!(g[i].shape(), inputs[i].shape(), "{name}: gradient shape");
        let scale = loss(inputs).unwrap().item::<f32>().unwrap().abs().max(1.0);
        for j in 0..base.len() {
            let at = |d: f32| -> f32 {
                let mut v = base.clone();
                v[j] += d;
                let mut xs = inputs.to_vec();
                xs[i] = arr(&v, inputs[i].shape())
                    .astype(inputs[i].dtype())
                    .unwrap();
                loss(&xs).unwrap().item::<f32>().unwrap()
            };
            let num = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (gv[j] - num).abs() <= 2e-5 * scale / h + 1e-4 * num.abs(),
                "{name}: d/d input{i}[{j}] = {} but finite differences give {num}",
                gv[j]
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng(5);
    for (bits, gs, transpose) in [(4, 32, true), (8, 64, false), (3, 32, true), (2, 32, false)] {
        let (m, k, n) = if transpose { (3, 64, 5) } else { (2, 6, 64) };
        let (rows, cols) = if transpose { (n, k) } else { (k, n) };
        let (wq, s, b) =
            ops::quantize(&arr(&rng.vec(rows * cols), &[rows, cols]), gs, bits).unwrap();
        let x = arr(&rng.vec(m * k), &[m, k]);
        let c = arr(&rng.vec(m * n), &[m, n]);
        let loss = |a: &[Array]| -> Result<Array> {
            let y = ops::quantized_matmul(&a[0], &a[1], &a[2], &a[3], transpose, gs, bits)?;
            ops::sum(&ops::multiply(&y, &c)?, Axes::All, false)
        };
        let name = format!("quantized_matmul bits={bits} gs={gs} transpose={transpose}");
        check_grad(
            &name,
            &loss,
            &[x.clone(), wq.clone(), s.clone(), b.clone()],
            &[0, 2, 3],
        );
        // w_q is a constant: zero gradient.
        let g = grad(loss, &[x, wq.clone(), s.clone(), b.clone()]).unwrap();
        assert!(
            f32s(&g[1].astype(Dtype::F32).unwrap())
                .iter()
                .all(|&v| v == 0.0)
        );

        // dequantize: gradients of scales and biases.
        let cd = arr(&rng.vec(rows * cols), &[rows, cols]);
        let dloss = |a: &[Array]| -> Result<Array> {
            let w = ops::dequantize(&a[0], &a[1], &a[2], gs, bits)?;
            ops::sum(&ops::multiply(&w, &cd)?, Axes::All, false)
        };
        check_grad(
            &format!("dequantize bits={bits}"),
            &dloss,
            &[wq, s, b],
            &[1, 2],
        );
    }
}

#[test]
fn vjp_and_grad_of_grad() {
    let mut rng = Rng(8);
    let (m, k, n, gs, bits) = (2, 64, 3, 64, 4);
    let (wq, s, b) = ops::quantize(&arr(&rng.vec(n * k), &[n, k]), gs, bits).unwrap();
    let x = arr(&rng.vec(m * k), &[m, k]);
    let ct = arr(&rng.vec(m * n), &[m, n]);
    let (_, g) = vjp(
        |a| {
            Ok(vec![ops::quantized_matmul(
                &a[0], &wq, &s, &b, true, gs, bits,
            )?])
        },
        std::slice::from_ref(&x),
        std::slice::from_ref(&ct),
    )
    .unwrap();
    // ct @ W.
    let deq = ops::dequantize(&wq, &s, &b, gs, bits).unwrap();
    let want = f32s(&ops::matmul(&ct, &deq).unwrap());
    for (a, w) in f32s(&g[0]).iter().zip(&want) {
        assert!((a - w).abs() < 1e-4, "{a} vs {w}");
    }
    // jvp (the transpose of the vjp): the product is linear in x, so J·t = t @ Wᵀ.
    let t = arr(&rng.vec(m * k), &[m, k]);
    let (_, jt) = jvp(
        |a| {
            Ok(vec![ops::quantized_matmul(
                &a[0], &wq, &s, &b, true, gs, bits,
            )?])
        },
        std::slice::from_ref(&x),
        std::slice::from_ref(&t),
    )
    .unwrap();
    let want = f32s(&ops::quantized_matmul(&t, &wq, &s, &b, true, gs, bits).unwrap());
    for (a, w) in f32s(&jt[0]).iter().zip(&want) {
        assert!((a - w).abs() < 1e-4, "jvp: {a} vs {w}");
    }
    // The gradient is itself differentiable: d/dx of sum((dL/dx)²) for L = sum(qmm(x) * x@?)
    // is finite and shaped like x (it goes through quantized_matmul with transpose=false).
    let gg = grad(
        |a| {
            let inner = grad(
                |b2| {
                    ops::sum(
                        &ops::square(&ops::quantized_matmul(&b2[0], &wq, &s, &b, true, gs, bits)?)?,
                        Axes::All,
                        false,
                    )
                },
                &[a[0].clone()],
            )?;
            ops::sum(&ops::square(&inner[0])?, Axes::All, false)
        },
        &[x],
    )
    .unwrap();
    assert_eq!(gg[0].shape(), &[m, k]);
    assert!(f32s(&gg[0]).iter().all(|v| v.is_finite()));
}

#[test]
fn vmap_over_x_and_weights() {
    let mut rng = Rng(21);
    let (batch, m, k, n, gs, bits) = (3, 2, 128, 5, 32, 4);
    let (wq, s, b) = ops::quantize(&arr(&rng.vec(n * k), &[n, k]), gs, bits).unwrap();
    let xb = arr(&rng.vec(batch * m * k), &[batch, m, k]);
    let f = |a: &[Array]| {
        Ok(vec![ops::quantized_matmul(
            &a[0], &wq, &s, &b, true, gs, bits,
        )?])
    };
    let per: Vec<Array> = (0..batch)
        .map(|i| {
            let xi = ops::reshape(
                &ops::slice(
                    &xb,
                    &[i as isize, 0, 0],
                    &[i as isize + 1, m as isize, k as isize],
                    &[1, 1, 1],
                )
                .unwrap(),
                &[m, k],
            )
            .unwrap();
            f(&[xi]).unwrap().remove(0)
        })
        .collect();
    let want = f32s(&ops::stack(&per, 0).unwrap());
    let got = vmap(f, std::slice::from_ref(&xb), &[Some(0)], &[0]).unwrap();
    assert_eq!(got[0].shape(), &[batch, m, n]);
    assert_eq!(f32s(&got[0]), want);
    // Mapped along axis 1 of x, stacked at axis 1.
    let xt = ops::moveaxis(&xb, 0, 1).unwrap();
    let got1 = vmap(f, &[xt], &[Some(1)], &[1]).unwrap();
    assert_eq!(f32s(&ops::moveaxis(&got1[0], 1, 0).unwrap()), want);

    // Batched weights: quantize, dequantize and the product per example.
    let wb = arr(&rng.vec(batch * n * k), &[batch, n, k]);
    let x = arr(&rng.vec(m * k), &[m, k]);
    let g = |a: &[Array]| -> Result<Vec<Array>> {
        let (q, s, b) = ops::quantize(&a[0], gs, bits)?;
        let y = ops::quantized_matmul(&a[1], &q, &s, &b, true, gs, bits)?;
        Ok(vec![y, ops::dequantize(&q, &s, &b, gs, bits)?])
    };
    let got = vmap(g, &[wb.clone(), x.clone()], &[Some(0), None], &[0, 0]).unwrap();
    for i in 0..batch {
        let wi = ops::reshape(
            &ops::slice(
                &wb,
                &[i as isize, 0, 0],
                &[i as isize + 1, n as isize, k as isize],
                &[1, 1, 1],
            )
            .unwrap(),
            &[n, k],
        )
        .unwrap();
        let want = g(&[wi, x.clone()]).unwrap();
        for (o, w) in got.iter().zip(&want) {
            let oi = ops::slice(
                o,
                &[i as isize, 0, 0],
                &[i as isize + 1, o.shape()[1] as isize, o.shape()[2] as isize],
                &[1, 1, 1],
            )
            .unwrap();
            assert_eq!(f32s(&oi), f32s(w), "example {i}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_arguments_are_errors() {
    let w = arr(&vec![0.5; 4 * 64], &[4, 64]);
    let (wq, s, b) = ops::quantize(&w, 64, 4).unwrap();
    let x = arr(&[0.0; 64], &[1, 64]);
    let msg = |r: Result<Array>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let msg3 =
        |r: Result<(Array, Array, Array)>| r.err().map(|e| e.to_string()).unwrap_or_default();

    // quantize
    assert!(msg3(ops::quantize(&w, 64, 7)).contains("bits must be"));
    assert!(msg3(ops::quantize(&w, 16, 4)).contains("group_size must be"));
    assert!(msg3(ops::quantize(&arr(&[0.0; 64], &[64]), 64, 4)).contains("at least 2 dimensions"));
    assert!(msg3(ops::quantize(&arr(&[0.0; 96], &[1, 96]), 64, 4)).contains("not a multiple"));
    assert!(msg3(ops::quantize(&w.astype(Dtype::I32).unwrap(), 64, 4)).contains("float32"));

    // dequantize
    assert!(
        msg(ops::dequantize(
            &wq.astype(Dtype::F32).unwrap(),
            &s,
            &b,
            64,
            4
        ))
        .contains("uint32")
    );
    assert!(
        msg(ops::dequantize(
            &wq,
            &s,
            &b.astype(Dtype::F16).unwrap(),
            64,
            4
        ))
        .contains("share one float dtype")
    );
    assert!(msg(ops::dequantize(&wq, &s, &b, 32, 4)).contains("scales and biases of shape"));
    assert!(msg(ops::dequantize(&wq, &s, &b, 64, 8)).contains("scales and biases of shape"));
    assert!(!msg(ops::dequantize(&wq, &s, &b, 64, 5)).is_empty());
    assert!(
        msg(ops::dequantize(
            &wq,
            &s.astype(Dtype::I32).unwrap(),
            &b.astype(Dtype::I32).unwrap(),
            64,
            4
        ))
        .contains("float")
    );
    let s2 = ops::reshape(&s, &[2, 2]).unwrap();
    assert!(msg(ops::dequantize(&wq, &s2, &s2, 64, 4)).contains("scales and biases of shape"));

    // quantized_matmul
    assert!(msg(ops::quantized_matmul(&x, &wq, &s, &b, true, 64, 4)).is_empty());
    assert!(
        msg(ops::quantized_matmul(
            &arr(&[0.0; 32], &[1, 32]),
            &wq,
            &s,
            &b,
            true,
            64,
            4
        ))
        .contains("inner dimensions differ")
    );
    assert!(
        msg(ops::quantized_matmul(&x, &wq, &s, &b, false, 64, 4))
            .contains("inner dimensions differ")
    );
    assert!(
        msg(ops::quantized_matmul(
            &x.astype(Dtype::I32).unwrap(),
            &wq,
            &s,
            &b,
            true,
            64,
            4
        ))
        .contains("x must be")
    );
    assert!(
        msg(ops::quantized_matmul(
            &Array::scalar(1.0f32),
            &wq,
            &s,
            &b,
            true,
            64,
            4
        ))
        .contains("x must be")
    );
    assert!(
        msg(ops::quantized_matmul(
            &x,
            &ops::reshape(&wq, &[1, 4, 8]).unwrap(),
            &s,
            &b,
            true,
            64,
            4
        ))
        .contains("2-D")
    );
    assert!(msg(ops::quantized_matmul(&x, &wq, &s, &b, true, 64, 0)).contains("bits must be"));
    assert!(msg(ops::quantized_matmul(&x, &wq, &s, &b, true, 0, 4)).contains("group_size must be"));
    // 3-bit rows need 3 words per 32 values: 8 words hold no whole number of groups of 64.
    assert!(!msg(ops::quantized_matmul(&x, &wq, &s, &b, true, 64, 3)).is_empty());
}

#[test]
fn empty_shapes() {
    let (wq, s, b) = ops::quantize(&arr(&[], &[0, 64]), 64, 4).unwrap();
    assert_eq!(wq.shape(), &[0, 8]);
    assert_eq!(
        ops::dequantize(&wq, &s, &b, 64, 4).unwrap().shape(),
        &[0, 64]
    );
    let y = ops::quantized_matmul(&arr(&[0.0; 64], &[1, 64]), &wq, &s, &b, true, 64, 4).unwrap();
    assert_eq!(y.shape(), &[1, 0]);
    assert!(y.to_vec::<f32>().unwrap().is_empty());
    let x0 = arr(&[], &[0, 64]);
    let w = arr(&vec![1.0; 3 * 64], &[3, 64]);
    let (wq, s, b) = ops::quantize(&w, 64, 8).unwrap();
    let y = ops::quantized_matmul(&x0, &wq, &s, &b, true, 64, 8).unwrap();
    assert_eq!(y.shape(), &[0, 3]);
    assert!(y.to_vec::<f32>().unwrap().is_empty());
}

mod never_panic {
    use super::*;
    use proptest::prelude::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    fn array(shape: &[usize], dt: Dtype) -> Array {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        arr(&v, shape).astype(dt).unwrap()
    }

    fn run(what: &str, f: impl FnOnce() -> Result<Array>) {
        let r = catch_unwind(AssertUnwindSafe(|| f().and_then(|a| a.eval().map(|_| a))));
        assert!(r.is_ok(), "{what} panicked");
    }

    fn shape() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(
            prop::sample::select(vec![0usize, 1, 2, 3, 4, 8, 16, 32, 64]),
            0..4,
        )
    }

    fn dtype() -> impl Strategy<Value = Dtype> {
        prop::sample::select(vec![
            Dtype::F32,
            Dtype::BF16,
            Dtype::F16,
            Dtype::U32,
            Dtype::I32,
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Random (mostly inconsistent) shapes, dtypes, bit widths and group sizes: every call
        /// returns a value or an error, at call time or at eval.
        #[test]
        fn affine_ops_never_panic(
            sw in shape(), sq in shape(), ss in shape(), sx in shape(),
            dw in dtype(), dq in dtype(), ds in dtype(), dx in dtype(),
            bits in 0u32..10, gs in prop::sample::select(vec![0usize, 16, 32, 64, 100, 128]),
            transpose in any::<bool>(),
        ) {
            let (w, q, s, x) = (array(&sw, dw), array(&sq, dq), array(&ss, ds), array(&sx, dx));
            run("quantize", || ops::quantize(&w, gs, bits).map(|t| t.0));
            run("dequantize", || ops::dequantize(&q, &s, &s, gs, bits));
            run("quantized_matmul", || ops::quantized_matmul(&x, &q, &s, &s, transpose, gs, bits));
            // Consistent weights with random activations.
            if let Ok((wq, sc, bi)) = ops::quantize(&w, gs, bits) {
                run("dequantize ok", || ops::dequantize(&wq, &sc, &bi, gs, bits));
                run("quantized_matmul ok", || {
                    ops::quantized_matmul(&x, &wq, &sc, &bi, transpose, gs, bits)
                });
            }
        }
    }
}
