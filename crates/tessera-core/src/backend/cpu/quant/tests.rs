//! Tests: golden values from gguf-py, round trips, every kernel variant against the dequantized
//! product, malformed input, and an ignored timing check.

use super::act::{KExtras, quantize_q8, quantize_q8k};
use super::*;
use crate::quant::GgmlType as T;
use std::path::PathBuf;

/// Deterministic xorshift generator (the tests need no external randomness).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (sum of uniforms), with an occasional outlier like real activations.
    fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
        if self.next().is_multiple_of(97) {
            s * 8.0
        } else {
            s
        }
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/gen-quant-fixtures.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Types with both a quantizer and a matmul kernel.
const QUANT_TYPES: &[T] = &[
    T::Q4_0,
    T::Q4_1,
    T::Q5_0,
    T::Q5_1,
    T::Q8_0,
    T::Q8_1,
    T::IQ4_NL,
    T::Q2_K,
    T::Q3_K,
    T::Q4_K,
    T::Q5_K,
    T::Q6_K,
];

/// gguf-py's dequantization computes the same f32 operations in the same order as ggml, so the
/// comparison is bit-exact (no ulp slack needed).
#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    let cases = fixture("dequant.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 15);
    for c in cases {
        let ty = T::from_name(c["type"].as_str().unwrap()).unwrap();
        let n = c["n"].as_u64().unwrap() as usize;
        let blocks = unhex(c["blocks"].as_str().unwrap());
        let want = f32s(&unhex(c["values"].as_str().unwrap()));
        let mut got = vec![f32::NAN; n];
        dequantize_row(ty, &blocks, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{ty} value {i}: got {g}, gguf-py {w}"
            );
        }
    }
}

#[test]
fn quantize_matches_gguf_py_reference_bit_for_bit() {
    let cases = fixture("quantize.json");
    for c in cases.as_array().unwrap() {
        let ty = T::from_name(c["type"].as_str().unwrap()).unwrap();
        let x = f32s(&unhex(c["input"].as_str().unwrap()));
        let want = unhex(c["blocks"].as_str().unwrap());
        let mut got = vec![0u8; want.len()];
        quantize_row(ty, &x, &mut got).unwrap();
        let ts = ty.type_size();
        for (b, (g, w)) in got.chunks(ts).zip(want.chunks(ts)).enumerate() {
            assert_eq!(g, w, "{ty} block {b}");
        }
    }
}

/// Relative RMS error bound of a quantize → dequantize round trip on the test data (roughly
/// normal with 1% outliers at 8x): about 1.3x what the quantizers reach. For the legacy types
/// gguf-py's reference quantizers reach the same errors on such data (Q4_0 0.13, Q4_1 0.09,
/// Q5_0 0.065, Q5_1 0.045, Q8_0 0.008); each extra bit halves them.
fn rms_bound(ty: T) -> f32 {
    match ty {
        T::Q8_0 | T::Q8_1 | T::Q8_K => 0.013,
        T::Q6_K => 0.03,
        T::Q5_1 | T::Q5_K => 0.065,
        T::Q5_0 => 0.09,
        T::Q4_1 | T::Q4_K => 0.13,
        T::IQ4_NL => 0.15,
        T::Q4_0 => 0.19,
        T::Q3_K => 0.26,
        T::Q2_K => 0.5,
        _ => 0.0,
    }
}

#[test]
fn round_trip_error_bounds() {
    let mut rng = Rng(0x5eed);
    let k = 1024;
    for &ty in QUANT_TYPES.iter().chain(&[T::Q8_K]) {
        let x = rng.vec(k);
        let mut q = vec![0u8; ty.row_bytes(k).unwrap()];
        quantize_row(ty, &x, &mut q).unwrap();
        let mut y = vec![0f32; k];
        dequantize_row(ty, &q, &mut y).unwrap();
        let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
        let norm: f32 = x.iter().map(|a| a * a).sum();
        let rel = (err / norm).sqrt();
        assert!(rel < rms_bound(ty), "{ty}: relative rms error {rel}");
        // Every value within one quantization step of its block's range (a loose, per-value
        // check that catches a mis-decoded field).
        let bs = ty.block_size();
        let steps = ((1u32 << (ty.bits_per_value() as u32).min(8)) - 1) as f32;
        for (xb, yb) in x.chunks(bs).zip(y.chunks(bs)) {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (a, b) in xb.iter().zip(yb) {
                assert!(
                    (a - b).abs() <= 2.0 * amax / steps * 4.0 + 1e-6,
                    "{ty}: {a} -> {b}"
                );
            }
        }
        // Zeros stay zeros.
        quantize_row(ty, &vec![0.0; k], &mut q).unwrap();
        dequantize_row(ty, &q, &mut y).unwrap();
        assert!(y.iter().all(|&v| v == 0.0), "{ty}: zeros");
    }
    // Plain float types.
    let x = rng.vec(64);
    for (ty, tol) in [(T::F32, 0.0), (T::F16, 1e-3), (T::BF16, 8e-3)] {
        let mut q = vec![0u8; ty.row_bytes(64).unwrap()];
        quantize_row(ty, &x, &mut q).unwrap();
        let mut y = vec![0f32; 64];
        dequantize_row(ty, &q, &mut y).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= tol * a.abs(), "{ty}: {a} -> {b}");
        }
    }
}

/// The activation quantizers of every instruction set agree bit for bit (after putting the
/// portable result in the paired layout the x86 kernels read), and the Q8_K one equals the
/// Q8_K block quantizer (ggml's reference).
#[test]
fn activation_quantizers_agree() {
    let mut rng = Rng(7);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    // Q8: two full groups of 8 blocks and a tail of 3 blocks per row; then one full group, a
    // half group of 4 and 2 single blocks.
    for k in [608, 448] {
        let mut x = rng.vec(3 * k);
        x[0..32].fill(0.0); // a zero block
        for v in &mut x[32..64] {
            *v = (*v * 4.0).round() / 4.0; // ties
        }
        for isa in Isa::available() {
            let (mut a, b) = (
                quantize_q8(Isa::Scalar, &x, 3, k, true, 3),
                quantize_q8(isa, &x, 3, k, true, 3),
            );
            if b.paired {
                let nb = a.nb;
                for i in 0..3 {
                    super::act::pair_row(super::act::Q8Out {
                        qs: &mut a.qs[i * k..(i + 1) * k],
                        d: &mut a.d[i * nb..(i + 1) * nb],
                        dsum: &mut a.dsum[i * nb..(i + 1) * nb],
                        s: &mut a.s[i * nb..(i + 1) * nb],
                        sum: &mut a.bias[i * nb..(i + 1) * nb],
                    });
                }
            }
            assert_eq!(a.qs, b.qs, "{isa:?}");
            assert_eq!(bits(&a.d), bits(&b.d), "{isa:?}");
            assert_eq!(bits(&a.dsum), bits(&b.dsum), "{isa:?}");
            assert_eq!(bits(&a.s), bits(&b.s), "{isa:?}");
            assert_eq!(a.bias, b.bias, "{isa:?}");
        }
    }
    // Q8_K.
    let k = 512;
    let mut x = rng.vec(3 * k);
    x[256..512].fill(0.0); // a zero super-block
    for v in &mut x[0..64] {
        *v = (*v * 4.0).round() / 4.0;
    }
    for isa in Isa::available() {
        let (a, b) = (
            quantize_q8k(Isa::Scalar, &x, 3, k, KExtras::default()),
            quantize_q8k(isa, &x, 3, k, KExtras::default()),
        );
        assert_eq!(a.qs, b.qs, "{isa:?}");
        assert_eq!(a.bsums, b.bsums, "{isa:?}");
        assert_eq!(bits(&a.d), bits(&b.d), "{isa:?}");
    }
    let acts = quantize_q8k(Isa::Scalar, &x[..k], 1, k, KExtras::default());
    let mut blocks = vec![0u8; T::Q8_K.row_bytes(k).unwrap()];
    quantize_row(T::Q8_K, &x[..k], &mut blocks).unwrap();
    for (b, blk) in blocks.chunks(292).enumerate() {
        assert_eq!(f32::from_le_bytes(blk[0..4].try_into().unwrap()), acts.d[b]);
        let qs: Vec<i8> = blk[4..260].iter().map(|&v| v as i8).collect();
        assert_eq!(qs, acts.qs[256 * b..256 * (b + 1)]);
    }
}

/// Random blocks with sane scales: exercises every bit pattern of the quants (e.g. -128 in
/// Q8_0, extreme Q6_K scales), which quantizers never produce.
fn random_blocks(rng: &mut Rng, ty: T, rows: usize, k: usize) -> Vec<u8> {
    let rb = ty.row_bytes(k).unwrap();
    let mut w: Vec<u8> = (0..rows * rb).map(|_| rng.next() as u8).collect();
    let (f16_fields, f32_fields): (&[usize], &[usize]) = match ty {
        T::Q4_0 | T::Q5_0 | T::Q8_0 | T::IQ4_NL => (&[0], &[]),
        T::Q4_1 | T::Q5_1 | T::Q8_1 | T::Q4_K | T::Q5_K => (&[0, 2], &[]),
        T::Q2_K => (&[80, 82], &[]),
        T::Q3_K => (&[108], &[]),
        T::Q6_K => (&[208], &[]),
        _ => (&[], &[]),
    };
    for blk in w.chunks_mut(ty.type_size()) {
        for &o in f16_fields {
            let v = half::f16::from_f32(rng.normal() * 0.01);
            blk[o..o + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
        for &o in f32_fields {
            blk[o..o + 4].copy_from_slice(&(rng.normal() * 0.01).to_le_bytes());
        }
    }
    w
}

/// Exact product of the dequantized weights (f64), and the bound the activation rounding
/// allows: per 32-value block, `|x - x_q| <= amax / 254` plus the f16 rounding of the scale
/// (`127 * 2^-11` steps of `amax / 127`, so at most 1.13x overall), times `Σ|w|`; for Q4_1/Q5_1
/// also the f16 rounding of Q8_1's `s` (`2^-11 |Σx|`) times `|m|`. Plus f32 accumulation slack.
fn reference(ty: T, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> (Vec<f64>, Vec<f64>) {
    let rb = ty.row_bytes(k).unwrap();
    let bs = if ty.block_size() == 256 { 256 } else { 32 };
    let mut wd = vec![0f32; n * k];
    for r in 0..n {
        dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut wd[r * k..(r + 1) * k]).unwrap();
    }
    let mut exact = vec![0f64; m * n];
    let mut bound = vec![0f64; m * n];
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for r in 0..n {
            let wr = &wd[r * k..(r + 1) * k];
            let (mut s, mut b, mut mag) = (0f64, 0f64, 0f64);
            for (blk, (xb, wb)) in xr.chunks(bs).zip(wr.chunks(bs)).enumerate() {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                let wabs: f64 = wb.iter().map(|v| v.abs() as f64).sum();
                b += 1.13 * amax / 254.0 * wabs;
                for (a, c) in xb.iter().zip(wb) {
                    s += *a as f64 * *c as f64;
                    mag += (*a as f64 * *c as f64).abs();
                }
                if matches!(ty, T::Q4_1 | T::Q5_1) {
                    let off = r * rb + blk * ty.type_size() + 2;
                    let mmin = half::f16::from_bits(u16::from_le_bytes([w[off], w[off + 1]]));
                    let sx: f64 = xb.iter().map(|v| *v as f64).sum();
                    b += (mmin.to_f64() * sx).abs() * 2f64.powi(-10);
                }
            }
            exact[i * n + r] = s;
            bound[i * n + r] = b + 1e-5 * (mag + b) + 1e-30;
        }
    }
    (exact, bound)
}

fn check_matmul(ty: T, w: &[u8], n: usize, k: usize, m: usize, rng: &mut Rng, what: &str) {
    let x = rng.vec(m * k);
    let (exact, bound) = reference(ty, w, n, k, &x, m);
    let mut outs = Vec::new();
    for isa in Isa::available() {
        let mut out = vec![f32::NAN; m * n];
        matmul_t_with(isa, ty, w, n, k, &x, m, &mut out).unwrap();
        for (j, (&o, (&e, &b))) in out.iter().zip(exact.iter().zip(&bound)).enumerate() {
            let err = (o as f64 - e).abs();
            assert!(
                err <= b,
                "{ty} {what} {isa:?} m={m} n={n} k={k} out[{}][{}] = {o}, exact {e}, |err| {err} > {b}",
                j / n,
                j % n
            );
        }
        outs.push((isa, out));
    }
    // All instruction sets compute the same integer sums; only f32 summation order differs.
    let (_, base) = &outs[0];
    for (isa, out) in &outs[1..] {
        for (j, (a, b)) in base.iter().zip(out).enumerate() {
            let tol = 1e-5 * (bound[j] + exact[j].abs()) as f32 + 1e-6;
            assert!(
                (a - b).abs() <= tol,
                "{ty} {what} scalar vs {isa:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn matmul_matches_dequantized_product_on_every_isa() {
    let mut rng = Rng(0xabcdef);
    let shapes = [
        (1, 7, 256),
        (2, 33, 512),
        (3, 16, 256),
        (4, 5, 768),
        (5, 9, 256),
        (9, 12, 512),
    ];
    for &ty in QUANT_TYPES {
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            // Quantized realistic weights, and random bit patterns.
            let wf = rng.vec(n * k);
            let rb = ty.row_bytes(k).unwrap();
            let mut w = vec![0u8; n * rb];
            for r in 0..n {
                quantize_row(ty, &wf[r * k..(r + 1) * k], &mut w[r * rb..(r + 1) * rb]).unwrap();
            }
            check_matmul(ty, &w, n, k, m, &mut rng, "quantized");
            if si % 2 == 0 {
                let w = random_blocks(&mut rng, ty, n, k);
                check_matmul(ty, &w, n, k, m, &mut rng, "random-blocks");
            }
        }
        // All of m = 1..=9 once, and a size that splits across threads and L2 row groups.
        for m in [6, 7, 8] {
            let w = random_blocks(&mut rng, ty, 3, 256);
            check_matmul(ty, &w, 3, 256, m, &mut rng, "m-sweep");
        }
        // 32-value formats: rows with blocks after the last full group of 8 (fewer than 4,
        // exactly a half group of 4 as in a 896-wide row, and a half group plus single blocks).
        if ty.block_size() == 32 {
            for (m, n, k) in [
                (1, 5, 96),
                (3, 4, 352),
                (5, 3, 32),
                (2, 6, 288),
                (1, 5, 896),
                (4, 3, 896),
                (2, 3, 448),
                (3, 2, 224),
                (1, 4, 160),
                (2, 3, 128),
            ] {
                let w = random_blocks(&mut rng, ty, n, k);
                check_matmul(ty, &w, n, k, m, &mut rng, "tail-blocks");
            }
        }
        let w = random_blocks(&mut rng, ty, 300, 1024);
        check_matmul(ty, &w, 300, 1024, 6, &mut rng, "parallel");
    }
}

/// Prefill shapes (the panel kernels on x86): activation counts that leave every remainder of
/// the row tile, weight row counts that are not a multiple of the panel height, rows split
/// across threads and across packed groups, and rows with a partial group of blocks.
#[test]
fn matmul_prefill_shapes() {
    let mut rng = Rng(0x9e37);
    for &ty in QUANT_TYPES {
        let k = if ty.block_size() == 256 { 512 } else { 352 };
        for (m, n) in [(16, 37), (33, 16), (64, 50), (8, 9), (11, 1)] {
            let w = random_blocks(&mut rng, ty, n, k);
            check_matmul(ty, &w, n, k, m, &mut rng, "prefill");
        }
        let wf = rng.vec(40 * k);
        let rb = ty.row_bytes(k).unwrap();
        let mut w = vec![0u8; 40 * rb];
        for r in 0..40 {
            quantize_row(ty, &wf[r * k..(r + 1) * k], &mut w[r * rb..(r + 1) * rb]).unwrap();
        }
        check_matmul(ty, &w, 40, k, 19, &mut rng, "prefill-quantized");
    }
    // Fewer weight rows than one panel per thread: the activation rows are split instead.
    for ty in [T::Q5_0, T::Q4_K] {
        let w = random_blocks(&mut rng, ty, 7, 2048);
        check_matmul(ty, &w, 7, 2048, 64, &mut rng, "prefill-split-m");
    }
    // Enough rows for several packed groups per thread.
    for ty in [T::Q4_0, T::Q4_1, T::Q8_0, T::Q6_K, T::Q4_K] {
        let k = 4096;
        let w = random_blocks(&mut rng, ty, 600, k);
        check_matmul(ty, &w, 600, k, 17, &mut rng, "prefill-groups");
    }
}

/// Every interleaved layout (`quant::INTERLEAVED`: Q4_0x8 to Q6_Kx8) against its natural one on
/// every instruction set: the 8-row decode kernel (m < `INTERLEAVED_DECODE_M`, in tiles of 4 rows), the natural kernels over
/// de-interleaved slices (prefill, the portable kernels), partial groups of blocks, several
/// slices per thread.
#[test]
fn interleaved_layouts_match_the_natural_layout() {
    let mut rng = Rng(0x5eed_0408);
    assert_eq!(
        crate::quant::INTERLEAVED.len(),
        7,
        "a layout was added: check its shapes"
    );
    for (base, layout) in crate::quant::INTERLEAVED {
        let shapes: [(usize, usize, usize); 15] = [
            (1, 8, 32),
            (1, 16, 896),
            (2, 24, 288),
            (3, 40, 352),
            (4, 8, 128),
            (5, 16, 256),
            (9, 24, 512),
            (17, 40, 352),
            (1, 600, 1024),
            (6, 600, 1024),
            (1, 8, 256),
            (2, 16, 768),
            (3, 24, 512),
            (4, 8, 1280),
            // From `INTERLEAVED_DECODE_M` rows on: the panel kernels over de-interleaved slices.
            (100, 16, 256),
        ];
        let whole_blocks = shapes
            .iter()
            .filter(|s| s.2.is_multiple_of(base.block_size()));
        for &(m, n, k) in whole_blocks {
            let w = random_blocks(&mut rng, base, n, k);
            let mut wi = vec![0u8; w.len()];
            super::interleave::interleave(base, &w, k / base.block_size(), &mut wi);
            let x = rng.vec(m * k);
            let (exact, bound) = reference(base, &w, n, k, &x, m);
            for isa in Isa::available() {
                let mut natural = vec![f32::NAN; m * n];
                matmul_t_with(isa, base, &w, n, k, &x, m, &mut natural).unwrap();
                let mut inter = vec![f32::NAN; m * n];
                matmul_t_with(isa, layout, &wi, n, k, &x, m, &mut inter).unwrap();
                for (j, (a, b)) in natural.iter().zip(&inter).enumerate() {
                    // The layouts sum the same integer products; only the f32 order of the
                    // per-block terms differs.
                    let tol = 1e-5 * (bound[j] + exact[j].abs()) as f32 + 1e-6;
                    assert!(
                        (a - b).abs() <= tol,
                        "{layout} {isa:?} m={m} n={n} k={k} out[{}][{}]: natural {a}, \
                         interleaved {b}",
                        j / n,
                        j % n
                    );
                }
            }
        }
        // A row count that is not whole groups is an error, not a panic.
        let k = base.block_size() * 2;
        let w = random_blocks(&mut rng, base, 12, k);
        let mut out = vec![0f32; 12];
        assert!(matmul_t_with(Isa::best(), layout, &w, 12, k, &rng.vec(k), 1, &mut out).is_err());
    }
}

/// Random Q4_1 rows in which each run of `share` blocks has its first block's `d` and `m`.
fn shared_q4_1_blocks(rng: &mut Rng, rows: usize, k: usize, share: usize) -> Vec<u8> {
    let mut w = random_blocks(rng, T::Q4_1, rows, k);
    for run in w.chunks_mut(20 * share) {
        let header: [u8; 4] = run[..4].try_into().unwrap();
        for blk in run.chunks_mut(20) {
            blk[..4].copy_from_slice(&header);
        }
    }
    w
}

/// The shared-header layouts (`Q4_1x8s2`, `Q4_1x8s4`) against natural Q4_1 on every
/// instruction set (decode kernel, de-interleaved prefill), the AMX path where there is one,
/// and dequantization; rows whose headers differ within a run are refused.
#[test]
fn shared_header_layouts_match_natural_q4_1() {
    let mut rng = Rng(0x5eed_0412);
    for (layout, share) in [(T::Q4_1x8s2, 2), (T::Q4_1x8s4, 4)] {
        for &(m, n, k) in &[
            (1, 8, 128),
            (2, 16, 512),
            (3, 24, 896),
            (4, 8, 1280),
            (1, 600, 1024),
            (6, 40, 512),
            (17, 16, 256),
            (100, 32, 512),
        ] {
            let w = shared_q4_1_blocks(&mut rng, n, k, share);
            let nb = k / 32;
            let mut ws = vec![0u8; n * layout.row_bytes(k).unwrap()];
            assert_eq!(ws.len() * 20 * share, w.len() * (16 * share + 4));
            assert!(super::interleave::interleave_as(layout, &w, nb, &mut ws));
            let mut back = vec![0u8; w.len()];
            super::interleave::deinterleave(layout, &ws, nb, 0, n / 8, &mut back);
            assert_eq!(back, w, "{layout}: de-interleaving restores the rows");
            let x = rng.vec(m * k);
            let (exact, bound) = reference(T::Q4_1, &w, n, k, &x, m);
            for isa in Isa::available() {
                let mut natural = vec![f32::NAN; m * n];
                matmul_t_with(isa, T::Q4_1, &w, n, k, &x, m, &mut natural).unwrap();
                let mut shared = vec![f32::NAN; m * n];
                matmul_t_with(isa, layout, &ws, n, k, &x, m, &mut shared).unwrap();
                for (j, (a, b)) in natural.iter().zip(&shared).enumerate() {
                    // The same integer sums; the shared header is applied once per record.
                    let tol = 1e-5 * (bound[j] + exact[j].abs()) as f32 + 1e-6;
                    assert!(
                        (a - b).abs() <= tol,
                        "{layout} {isa:?} m={m} n={n} k={k} [{j}]: natural {a}, shared {b}"
                    );
                }
            }
            #[cfg(target_arch = "x86_64")]
            if crate::backend::cpu::amx::supported() && m >= super::amx_min_m(layout) {
                let mut natural = vec![f32::NAN; m * n];
                matmul_t_on(
                    Isa::best(),
                    true,
                    T::Q4_1,
                    &w,
                    n,
                    k,
                    &x,
                    m,
                    &mut natural,
                    None,
                )
                .unwrap();
                let mut shared = vec![f32::NAN; m * n];
                matmul_t_on(
                    Isa::best(),
                    true,
                    layout,
                    &ws,
                    n,
                    k,
                    &x,
                    m,
                    &mut shared,
                    None,
                )
                .unwrap();
                assert_eq!(natural, shared, "{layout} AMX m={m}: the same bf16 tiles");
            }
        }
        // A block whose header differs from its run's first is refused, not dropped.
        let (n, k) = (8, 256);
        let mut w = shared_q4_1_blocks(&mut rng, n, k, share);
        w[5 * (k / 32) * 20 + 20] ^= 1; // row 5, block 1: its d
        let mut ws = vec![0u8; n * layout.row_bytes(k).unwrap()];
        assert!(!super::interleave::interleave_as(
            layout,
            &w,
            k / 32,
            &mut ws
        ));
    }
}

#[test]
fn matmul_float_weights() {
    let mut rng = Rng(99);
    let (m, n, k) = (3, 5, 40);
    let x = rng.vec(m * k);
    let wf = rng.vec(n * k);
    for ty in [T::F32, T::F16, T::BF16] {
        let mut w = vec![0u8; n * ty.row_bytes(k).unwrap()];
        quantize_row(ty, &wf, &mut w).unwrap();
        let (exact, _) = reference(ty, &w, n, k, &x, m);
        let mut out = vec![0f32; m * n];
        matmul_t(ty, &w, n, k, &x, m, &mut out).unwrap();
        for (o, e) in out.iter().zip(&exact) {
            assert!(
                (*o as f64 - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "{ty}: {o} vs {e}"
            );
        }
    }
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let k = 256;
    let x = vec![0.5f32; 2 * k];
    let mut out = vec![0f32; 2 * 3];
    for &ty in QUANT_TYPES {
        let rb = ty.row_bytes(k).unwrap();
        let w = vec![0u8; 3 * rb];
        assert!(matmul_t(ty, &w, 3, k, &x, 2, &mut out).is_ok());
        assert!(
            matmul_t(ty, &w[1..], 3, k, &x, 2, &mut out).is_err(),
            "{ty} short w"
        );
        assert!(
            matmul_t(ty, &w, 3, k, &x[1..], 2, &mut out).is_err(),
            "{ty} short x"
        );
        assert!(
            matmul_t(ty, &w, 3, k, &x, 2, &mut out[1..]).is_err(),
            "{ty} short out"
        );
        assert!(
            matmul_t(ty, &w, 4, k, &x, 2, &mut out).is_err(),
            "{ty} n too big"
        );
        assert!(
            matmul_t(ty, &w, 3, k + 1, &x, 2, &mut out).is_err(),
            "{ty} k not blocks"
        );
        assert!(
            matmul_t(ty, &w, usize::MAX, k, &x, 2, &mut out).is_err(),
            "{ty} overflow"
        );
        let mut y = vec![0f32; k];
        assert!(dequantize_row(ty, &w[..rb - 1], &mut y).is_err());
        assert!(dequantize_row(ty, &w[..rb], &mut y[..k - 1]).is_err());
        assert!(dequantize_row(ty, &w[..rb + 1], &mut y).is_err());
        let mut q = vec![0u8; rb];
        assert!(quantize_row(ty, &x[..k - 1], &mut q).is_err());
        assert!(quantize_row(ty, &x[..k], &mut q[..rb - 1]).is_err());
        assert!(quantize_row(ty, &x[..k], &mut q).is_ok());
    }
    let mut y = vec![0f32; 256];
    assert!(dequantize_row(T::IQ2_XXS, &[0u8; 66], &mut y).is_err());
    assert!(quantize_row(T::IQ2_XXS, &y, &mut [0u8; 66]).is_err());
    assert!(matmul_t(T::Q8_K, &[0u8; 292], 1, 256, &y, 1, &mut [0f32]).is_err());
    assert!(matmul_t(T::I32, &[0u8; 4], 1, 1, &[1.0], 1, &mut [0f32]).is_err());
    // Empty shapes are fine.
    assert!(matmul_t(T::Q4_0, &[], 0, 32, &[0.0; 32], 1, &mut []).is_ok());
    assert!(matmul_t(T::Q4_0, &[0u8; 18], 1, 32, &[], 0, &mut []).is_ok());
    let mut o = [1f32; 2];
    matmul_t(T::Q4_K, &[], 2, 0, &[], 1, &mut o).unwrap();
    assert_eq!(o, [0.0, 0.0]);
}

/// Best time per call of `f` in seconds: runs of about 30 ms, best of 3.
fn time_it(mut f: impl FnMut()) -> f64 {
    f();
    let t = std::time::Instant::now();
    f();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let reps = ((0.03 / once) as usize).clamp(1, 10_000);
    (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::MAX, f64::min)
}

/// Speed check (not a test; a few seconds):
/// `cargo test --release -p tessera-core --lib quant::tests::timing -- --ignored --nocapture`.
///
/// Prints, for `m = 1` (decode), GB/s of weight bytes read per product: "hot" when the matrix
/// stays in cache between calls, "cold" when 8 matrices (> L3) are used in turn, next to the
/// machine's read bandwidth measured in the same run (a 256 MB sum); and for `m = 64`
/// (prefill) the integer throughput in GOPS (`2 m n k / t`).
#[test]
#[ignore]
fn timing() {
    use crate::backend::cpu::pool::parallel_chunks;
    let mut rng = Rng(1);
    let buf = vec![1f32; 64 << 20];
    let read = time_it(|| {
        parallel_chunks(buf.len(), 1 << 20, &|a, b| {
            crate::backend::cpu::simd::dispatch(|| {
                let mut acc = [0f32; 16];
                for c in buf[a..b].chunks_exact(16) {
                    for j in 0..16 {
                        acc[j] += c[j];
                    }
                }
                std::hint::black_box(acc);
            })
        })
    });
    let read_bw = (buf.len() * 4) as f64 / read / 1e9;
    drop(buf);
    println!("read bandwidth (256 MB sum): {read_bw:.1} GB/s");
    let mut isas = vec![Isa::best()];
    for isa in [Isa::AvxVnni, Isa::Avx2] {
        if Isa::best() != isa && isa.supported() {
            isas.push(isa);
        }
    }
    let types = [
        T::Q4_0,
        T::Q4_1,
        T::Q8_0,
        T::Q4_K,
        T::Q6_K,
        T::Q5_0,
        T::Q5_K,
        T::Q2_K,
        T::Q3_K,
    ];
    for (n, k, copies) in [(576, 1536, 1), (4096, 4096, 1), (4096, 4096, 8)] {
        for ty in types {
            if copies > 1 && !matches!(ty, T::Q4_0 | T::Q4_1 | T::Q4_K | T::Q6_K | T::Q8_0) {
                continue;
            }
            let rb = ty.row_bytes(k).unwrap();
            let ws: Vec<Vec<u8>> = (0..copies)
                .map(|_| random_blocks(&mut rng, ty, n, k))
                .collect();
            let x = rng.vec(k);
            let mut out = vec![0f32; n];
            for &isa in &isas {
                let mut next = 0;
                let t = time_it(|| {
                    matmul_t_with(isa, ty, &ws[next % copies], n, k, &x, 1, &mut out).unwrap();
                    next += 1;
                });
                let gbs = (n * rb) as f64 / t / 1e9;
                let what = if copies > 1 { "cold" } else { "hot " };
                println!(
                    "decode {ty:5} {n:4}x{k:<4} {what} {isa:5?} {:7.1} us {gbs:6.1} GB/s ({:3.0}% of read bw)",
                    t * 1e6,
                    100.0 * gbs / read_bw
                );
            }
        }
    }
    let (m, n, k) = (64, 4096, 4096);
    let x = rng.vec(m * k);
    let mut out = vec![0f32; m * n];
    for ty in [T::Q4_0, T::Q4_1, T::Q8_0, T::Q4_K, T::Q6_K] {
        let w = random_blocks(&mut rng, ty, n, k);
        for &isa in &isas {
            let t = time_it(|| matmul_t_with(isa, ty, &w, n, k, &x, m, &mut out).unwrap());
            let gops = 2.0 * (m * n * k) as f64 / t / 1e9;
            println!(
                "prefill {ty:5} m={m} {n}x{k} {isa:5?} {:7.2} ms {gops:6.1} GOPS",
                t * 1e3
            );
        }
    }
}

/// Kernel cost check (not a test): ns per 256 weights for a cache-resident 256 x 4096 matrix,
/// `m = 1` and `m = 4`, best of many short runs (robust on a shared machine). Run with
/// `TESSERA_NUM_THREADS=1` to time one core:
/// `TESSERA_NUM_THREADS=1 cargo test --release -p tessera-core --lib quant::tests::kernel_cost
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn kernel_cost() {
    let mut rng = Rng(3);
    let (n, k) = (256, 4096);
    let types = [
        T::Q4_0,
        T::Q4_1,
        T::Q5_0,
        T::Q8_0,
        T::IQ4_NL,
        T::Q4_K,
        T::Q6_K,
        T::Q5_K,
        T::Q2_K,
        T::Q3_K,
    ];
    for ty in types {
        let w = random_blocks(&mut rng, ty, n, k);
        let mut line = format!("{ty:6}");
        for m in [1, 4] {
            let x = rng.vec(m * k);
            let mut out = vec![0f32; m * n];
            for isa in Isa::available().into_iter().rev() {
                if isa == Isa::Scalar {
                    continue;
                }
                let mut best = f64::MAX;
                for _ in 0..40 {
                    let t = std::time::Instant::now();
                    for _ in 0..4 {
                        matmul_t_with(isa, ty, &w, n, k, &x, m, &mut out).unwrap();
                    }
                    best = best.min(t.elapsed().as_secs_f64() / 4.0);
                }
                let ns = best * 1e9 / (n * k / 256) as f64;
                line += &format!("  m={m} {isa:?} {ns:6.1}");
            }
        }
        println!("{line}  ns/256 weights");
    }
}

/// Best time of single calls of `f` over about `budget` seconds (the minimum is robust to load
/// from other processes on a shared machine).
fn best_of(budget: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = std::time::Instant::now();
    let mut best = f64::MAX;
    let mut calls = 0;
    while calls < 3 || (start.elapsed().as_secs_f64() < budget && calls < 100_000) {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        calls += 1;
    }
    best
}

/// Prefill speed check (not a test; about 10 s):
/// `cargo test --release -p tessera-core --lib quant::tests::prefill_timing -- --ignored
/// --nocapture`.
///
/// Integer throughput (`2 m n k / t`, GOPS) for `m = 64` and `m = 512` on the projection shapes
/// of Gemma 3 270M (k = 640, 2048) and Qwen2.5-0.5B (k = 896, 4864), and for `m = 1` the GB/s
/// of weight bytes read (the matrices stay in cache between calls). `QT_TYPES=Q4_0,Q8_0`,
/// `QT_M=1,64` and `QT_ISA=avx2` narrow the run (for interleaved A/B comparisons).
#[test]
#[ignore]
fn prefill_timing() {
    let env_list = |name: &str| -> Option<Vec<String>> {
        std::env::var(name)
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
    };
    let types: Vec<T> = match env_list("QT_TYPES") {
        Some(v) => v.iter().filter_map(|s| T::from_name(s)).collect(),
        None => vec![T::Q4_0, T::Q5_0, T::Q8_0, T::Q4_K, T::Q6_K],
    };
    let ms: Vec<usize> = match env_list("QT_M") {
        Some(v) => v.iter().filter_map(|s| s.parse().ok()).collect(),
        None => vec![1, 64, 512],
    };
    let isa = match std::env::var("QT_ISA").as_deref() {
        Ok("avx2") => Isa::Avx2,
        Ok("avxvnni") => Isa::AvxVnni,
        Ok("scalar") => Isa::Scalar,
        _ => Isa::best(),
    };
    let mut rng = Rng(11);
    // Activation quantization (once per call): ns per value, m = 512, k = 2048.
    let (m, k) = (512, 2048);
    let x = rng.vec(m * k);
    let q8 = best_of(0.25, || {
        std::hint::black_box(quantize_q8(isa, &x, m, k, false, 8));
    });
    let q8k = best_of(0.25, || {
        std::hint::black_box(quantize_q8k(isa, &x, m, k, KExtras::default()));
    });
    let per = 1e9 / (m * k) as f64;
    println!(
        "quantize {isa:?}: Q8 {:.2} ns/value, Q8_K {:.2} ns/value",
        q8 * per,
        q8k * per
    );
    for ty in types {
        // (n, k): Gemma 3 270M gate/up and down, Qwen2.5-0.5B gate/up and down.
        let shapes: &[(usize, usize)] = if ty.block_size() == 256 {
            &[(640, 2048), (896, 4864)]
        } else {
            &[(2048, 640), (640, 2048), (4864, 896), (896, 4864)]
        };
        for &m in &ms {
            let mut line = format!("{ty:5} m={m:<3} {isa:?}");
            let mut total = (0.0, 0.0);
            for &(n, k) in shapes {
                let w = random_blocks(&mut rng, ty, n, k);
                let x = rng.vec(m * k);
                let mut out = vec![0f32; m * n];
                let t = best_of(0.25, || {
                    matmul_t_with(isa, ty, &w, n, k, &x, m, &mut out).unwrap()
                });
                if m == 1 {
                    let gbs = w.len() as f64 / t / 1e9;
                    line += &format!("  {n}x{k} {gbs:5.1} GB/s");
                    total.0 += w.len() as f64;
                } else {
                    let gops = 2.0 * (m * n * k) as f64 / t / 1e9;
                    line += &format!("  {n}x{k} {gops:5.1}");
                    total.0 += 2.0 * (m * n * k) as f64;
                }
                total.1 += t;
            }
            let unit = if m == 1 { "GB/s" } else { "GOPS" };
            println!("{line}  | all {:5.1} {unit}", total.0 / total.1 / 1e9);
        }
    }
}

/// The AMX prefill path (where this machine has AMX; said and skipped elsewhere) against an f64
/// product of the bf16-rounded dequantized weights and activations: every format with a matmul
/// kernel, natural and interleaved layouts, row and k counts that leave partial tiles.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_prefill_matches_the_rounded_product() {
    if !crate::backend::cpu::amx::supported() {
        eprintln!("this CPU (or OS) has no AMX: the AMX path is not tested here");
        return;
    }
    let mut rng = Rng(0xa3c5_0001);
    let mut cases: Vec<(T, T)> = QUANT_TYPES
        .iter()
        .filter(|t| **t != T::Q8_1)
        .map(|t| (*t, *t))
        .collect();
    cases.extend(crate::quant::INTERLEAVED.iter().copied());
    for (base, layout) in cases {
        for &(m, n, k) in &[(64, 40, 512), (97, 72, 768), (70, 32, 256)] {
            // Interleaved layouts go to the tiles from more rows.
            let m = m.max(super::amx_min_m(layout));
            let w = random_blocks(&mut rng, base, n, k);
            let wl = if layout == base {
                w.clone()
            } else {
                let mut wi = vec![0u8; w.len()];
                super::interleave::interleave(base, &w, k / base.block_size(), &mut wi);
                wi
            };
            let x = rng.vec(m * k);
            let rb = base.row_bytes(k).unwrap();
            let mut wd = vec![0f32; n * k];
            for r in 0..n {
                dequantize_row(base, &w[r * rb..(r + 1) * rb], &mut wd[r * k..(r + 1) * k])
                    .unwrap();
            }
            let mut out = vec![f32::NAN; m * n];
            matmul_t_on(Isa::best(), true, layout, &wl, n, k, &x, m, &mut out, None).unwrap();
            let reference = crate::backend::cpu::amx::bf16_reference(&x, &wd, m, n, k);
            for i in 0..m {
                for r in 0..n {
                    let (want, mag) = reference[i * n + r];
                    let got = out[i * n + r] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * mag + 1e-30,
                        "{layout} m={m} n={n} k={k} [{i}][{r}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// Speed of the bf16 decoders of the AMX path, per format (for tuning):
/// `cargo test --release -p tessera-core --lib amx_decode_timing -- --ignored --nocapture`.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore]
fn amx_decode_timing() {
    if !crate::backend::cpu::amx::supported() {
        return;
    }
    let mut rng = Rng(7);
    let (n, k) = (1024, 1024);
    for ty in [T::Q4_0, T::Q5_0, T::Q8_0, T::Q4_K, T::Q6_K] {
        let w = random_blocks(&mut rng, ty, n, k);
        let rb = ty.row_bytes(k).unwrap();
        let mut buf = vec![0u16; 32 * k];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for r0 in (0..n).step_by(32) {
                let mut panel = crate::backend::cpu::amx::gemm::Panel::new(&mut buf, 32);
                unsafe {
                    super::x86::to_bf16::decode_rows(
                        ty,
                        &w[r0 * rb..(r0 + 32) * rb],
                        rb,
                        k,
                        &mut panel,
                    )
                };
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        eprintln!("{ty}: {:.2} ns per value", best * 1e9 / (n * k) as f64);
    }
}
