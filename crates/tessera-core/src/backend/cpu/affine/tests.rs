//! Kernel tests: every instruction set against the scalar kernels and an f64 reference built
//! from the scalar codec, over every format and odd shapes.

use super::format::{Format, pack, unpack};
use super::*;

/// A small deterministic generator (xorshift), values roughly uniform in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

const BITS: [u32; 7] = [1, 2, 3, 4, 5, 6, 8];
const GROUPS: [usize; 3] = [32, 64, 128];

/// Random codes, their packed bytes, and random f32 scales/biases for `rows × cols`.
fn random_weights(
    fmt: Format,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) -> (Vec<u8>, Vec<u8>, Vec<f32>, Vec<f32>) {
    let codes: Vec<u8> = (0..rows * cols)
        .map(|_| (rng.next() & fmt.mask()) as u8)
        .collect();
    let rb = fmt.row_bytes(cols);
    let mut w = vec![0u8; rows * rb];
    for r in 0..rows {
        pack(fmt, &codes[r * cols..][..cols], &mut w[r * rb..][..rb]);
    }
    let ng = rows * cols / fmt.group_size;
    let s = (0..ng).map(|_| rng.f32() * 0.1).collect();
    let b = (0..ng).map(|_| rng.f32()).collect();
    (codes, w, s, b)
}

#[test]
fn pack_unpack_round_trip() {
    let mut rng = Rng(7);
    for bits in BITS {
        let fmt = Format::new("t", 32, bits).unwrap();
        let (codes, w, _, _) = random_weights(fmt, 3, 64, &mut rng);
        let mut back = vec![0u8; codes.len()];
        for r in 0..3 {
            unpack(
                fmt,
                &w[r * fmt.row_bytes(64)..][..fmt.row_bytes(64)],
                &mut back[r * 64..][..64],
            );
        }
        assert_eq!(back, codes, "bits {bits}");
    }
}

#[test]
fn decode_rows_match_scalar_on_every_isa() {
    let mut rng = Rng(11);
    for bits in BITS {
        for gs in GROUPS {
            let fmt = Format::new("t", gs, bits).unwrap();
            let cols = gs * 3;
            let (codes, w, s, b) = random_weights(fmt, 1, cols, &mut rng);
            let want: Vec<f32> = codes
                .iter()
                .enumerate()
                .map(|(j, &q)| s[j / gs] * q as f32 + b[j / gs])
                .collect();
            for isa in Isa::available() {
                let mut out = vec![0f32; cols];
                kernels::decode_row(isa, fmt, &w, &s, &b, &mut out);
                assert_eq!(out, want, "{isa:?} bits {bits} gs {gs}");
            }
        }
    }
}

/// `x · Wᵀ` or `x · W` in f64 from the codes.
#[allow(clippy::too_many_arguments)]
fn reference(
    fmt: Format,
    transpose: bool,
    codes: &[u8],
    s: &[f32],
    b: &[f32],
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f64> {
    let cols = if transpose { k } else { n };
    let wv = |r: usize, c: usize| {
        let g = (r * cols + c) / fmt.group_size;
        s[g] as f64 * codes[r * cols + c] as f64 + b[g] as f64
    };
    let mut y = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|t| x[i * k + t] as f64 * if transpose { wv(j, t) } else { wv(t, j) })
                .sum();
        }
    }
    y
}

#[test]
fn matmul_matches_reference_on_every_isa() {
    let mut rng = Rng(3);
    // (m, k or n multiplier, other dim): covers the fused path (m <= 8), the GEMM tiles
    // (m > 8), tails of tiles and 32-value groups with an odd number of groups.
    let shapes = [
        (1, 3, 5),
        (2, 1, 70),
        (4, 4, 17),
        (5, 2, 9),
        (9, 3, 66),
        (13, 5, 3),
    ];
    for bits in BITS {
        for gs in GROUPS {
            let fmt = Format::new("t", gs, bits).unwrap();
            for &(m, mult, other) in &shapes {
                for transpose in [true, false] {
                    let (k, n) = if transpose {
                        (gs * mult, other)
                    } else {
                        (other, gs * mult)
                    };
                    let (rows, cols) = if transpose { (n, k) } else { (k, n) };
                    let (codes, w, s, b) = random_weights(fmt, rows, cols, &mut rng);
                    let x: Vec<f32> = (0..m * k).map(|_| rng.f32()).collect();
                    let want = reference(fmt, transpose, &codes, &s, &b, &x, m, k, n);
                    let scale: f64 = x.iter().map(|v| v.abs() as f64).sum::<f64>() / m as f64;
                    for isa in Isa::available() {
                        let mut out = vec![f32::NAN; m * n];
                        matmul_with(isa, fmt, transpose, &x, m, k, n, &w, &s, &b, &mut out)
                            .unwrap();
                        for (i, (o, r)) in out.iter().zip(&want).enumerate() {
                            assert!(
                                (*o as f64 - r).abs() <= 1e-5 * (scale + 1.0),
                                "{isa:?} bits {bits} gs {gs} m {m} k {k} n {n} transpose {transpose} [{i}]: {o} vs {r}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn half_precision_parameters() {
    let mut rng = Rng(5);
    let fmt = Format::new("t", 64, 4).unwrap();
    let (m, k, n) = (3, 128, 20);
    let (codes, w, s, b) = random_weights(fmt, n, k, &mut rng);
    let s16: Vec<bf16> = s.iter().map(|&v| bf16::from_f32(v)).collect();
    let b16: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
    let (sr, br): (Vec<f32>, Vec<f32>) = (
        s16.iter().map(|v| v.to_f32()).collect(),
        b16.iter().map(|v| v.to_f32()).collect(),
    );
    let x: Vec<f32> = (0..m * k).map(|_| rng.f32()).collect();
    let want = reference(fmt, true, &codes, &sr, &br, &x, m, k, n);
    for isa in Isa::available() {
        let mut out = vec![0f32; m * n];
        matmul_with(isa, fmt, true, &x, m, k, n, &w, &s16, &b16, &mut out).unwrap();
        for (o, r) in out.iter().zip(&want) {
            assert!((*o as f64 - r).abs() < 1e-4, "{isa:?}: {o} vs {r}");
        }
        let mut deq = vec![bf16::ZERO; n * k];
        dequantize_with(isa, fmt, &w, &s16, &b16, k, &mut deq).unwrap();
        for (j, v) in deq.iter().enumerate() {
            let g = j / 64;
            let t = bf16::from_f32(sr[g] * codes[j] as f32).to_f32();
            assert_eq!(*v, bf16::from_f32(t + br[g]), "{isa:?} [{j}]");
        }
    }
}

#[test]
fn inconsistent_sizes_are_errors() {
    let fmt = Format::new("t", 32, 4).unwrap();
    let w = vec![0u8; 16];
    let (s, b) = (vec![0f32; 1], vec![0f32; 1]);
    let mut out = vec![0f32; 1];
    // k = 32, n = 1 is consistent; k = 64 is not.
    assert!(
        matmul_with(
            Isa::Scalar,
            fmt,
            true,
            &[0.0; 32],
            1,
            32,
            1,
            &w,
            &s,
            &b,
            &mut out
        )
        .is_ok()
    );
    assert!(
        matmul_with(
            Isa::Scalar,
            fmt,
            true,
            &[0.0; 64],
            1,
            64,
            1,
            &w,
            &s,
            &b,
            &mut out
        )
        .is_err()
    );
    assert!(
        matmul_with(
            Isa::Scalar,
            fmt,
            true,
            &[0.0; 32],
            1,
            32,
            1,
            &w[..8],
            &s,
            &b,
            &mut out
        )
        .is_err()
    );
    let mut d = vec![0f32; 31];
    assert!(dequantize_with(Isa::Scalar, fmt, &w, &s, &b, 32, &mut d).is_err());
}
