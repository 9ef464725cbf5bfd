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

/// `x · Wᵀ` or `x · W` in f64 from the codes, and `Σ|x||w|` per output.
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
) -> (Vec<f64>, Vec<f64>) {
    let cols = if transpose { k } else { n };
    let wv = |r: usize, c: usize| {
        let g = (r * cols + c) / fmt.group_size;
        s[g] as f64 * codes[r * cols + c] as f64 + b[g] as f64
    };
    let mut y = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for t in 0..k {
                let p = x[i * k + t] as f64 * if transpose { wv(j, t) } else { wv(t, j) };
                y[i * n + j] += p;
                mag[i * n + j] += p.abs();
            }
        }
    }
    (y, mag)
}

/// Error bound of the kernels: f32 accumulation over `k` terms (`k u`), plus the split of f32
/// activations into two bf16 (16 significant bits) on the BF16 kernels.
fn tolerance(k: usize, mag: f64) -> f64 {
    (k as f64 * f32::EPSILON as f64 / 2.0 + 2f64.powi(-16)) * mag + 1e-30
}

#[test]
fn matmul_matches_reference_on_every_isa() {
    let mut rng = Rng(3);
    // (m, k or n multiplier, other dim): covers the fused path (m <= 8), the GEMM tiles
    // (m > 8), tails of tiles, 32-value groups with an odd number of groups, and long rows
    // that the fused driver splits into several spans of groups (m = 4, 40 groups); one
    // activation row against 11 weight rows: whole tiles of 4 rows and a tail of 3 on AVX2.
    let shapes = [
        (4, 40, 3),
        (1, 40, 2),
        (1, 6, 11),
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
            for (si, &(m, mult, other)) in shapes.iter().enumerate() {
                for transpose in [true, false] {
                    let (k, n) = if transpose {
                        (gs * mult, other)
                    } else {
                        (other, gs * mult)
                    };
                    let (rows, cols) = if transpose { (n, k) } else { (k, n) };
                    let (codes, w, s, b) = random_weights(fmt, rows, cols, &mut rng);
                    // Every other shape has bf16-exact activations (the BF16 kernels then
                    // skip the low part).
                    let x: Vec<f32> = (0..m * k)
                        .map(|_| rng.f32())
                        .map(|v| {
                            if si % 2 == 1 {
                                bf16::from_f32(v).to_f32()
                            } else {
                                v
                            }
                        })
                        .collect();
                    let (want, mag) = reference(fmt, transpose, &codes, &s, &b, &x, m, k, n);
                    for isa in Isa::available() {
                        let mut out = vec![f32::NAN; m * n];
                        matmul_with(isa, fmt, transpose, &x, m, k, n, &w, &s, &b, &mut out)
                            .unwrap();
                        for (i, ((o, r), g)) in out.iter().zip(&want).zip(&mag).enumerate() {
                            assert!(
                                (*o as f64 - r).abs() <= tolerance(k, *g),
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
    let (want, mag) = reference(fmt, true, &codes, &sr, &br, &x, m, k, n);
    for isa in Isa::available() {
        let mut out = vec![0f32; m * n];
        matmul_with(isa, fmt, true, &x, m, k, n, &w, &s16, &b16, &mut out).unwrap();
        for ((o, r), g) in out.iter().zip(&want).zip(&mag) {
            assert!(
                (*o as f64 - r).abs() <= tolerance(k, *g),
                "{isa:?}: {o} vs {r}"
            );
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

/// Seconds of this thread's time on a CPU (`CLOCK_THREAD_CPUTIME_ID`, Linux) when
/// `AFFINE_BENCH_CPU_TIME` is set and the pool has one thread (a shared machine then does not
/// count the time the thread waited), else wall time.
enum Clock {
    Wall(std::time::Instant),
    Cpu(f64),
}

impl Clock {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn cpu_seconds() -> Option<f64> {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        unsafe extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut t = Timespec { sec: 0, nsec: 0 };
        // SAFETY: a valid out-pointer; the C library is linked on Linux.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
        (rc == 0).then_some(t.sec as f64 + t.nsec as f64 * 1e-9)
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    fn cpu_seconds() -> Option<f64> {
        None
    }
    fn now() -> Clock {
        let cpu = std::env::var_os("AFFINE_BENCH_CPU_TIME").is_some()
            && crate::backend::cpu::pool::global().threads() == 1;
        match Self::cpu_seconds().filter(|_| cpu) {
            Some(t) => Clock::Cpu(t),
            None => Clock::Wall(std::time::Instant::now()),
        }
    }
    fn elapsed(&self) -> f64 {
        match self {
            Clock::Wall(t) => t.elapsed().as_secs_f64(),
            Clock::Cpu(t) => Self::cpu_seconds().unwrap_or(*t) - t,
        }
    }
}

/// Speed of the product for a 4096 × 4096 matrix (`AFFINE_BENCH_N` rows instead of 4096:
/// e.g. 16384 for a matrix larger than the L3 cache; run with `--ignored --nocapture`, in
/// release): GB/s of quantized weights (codes + bf16 scales and biases) streamed, and GFLOP/s.
/// Best of several repetitions (the machine may be shared). `AFFINE_BENCH=bits:gs:m,...`
/// overrides the cases.
#[test]
#[ignore]
fn bench_matmul() {
    let n: usize = std::env::var("AFFINE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let k = 4096;
    let mut rng = Rng(99);
    let cases: Vec<(u32, usize, usize)> = match std::env::var("AFFINE_BENCH") {
        Ok(v) => v
            .split(',')
            .map(|c| {
                let p: Vec<usize> = c.split(':').map(|t| t.parse().unwrap()).collect();
                (p[0] as u32, p[1], p[2])
            })
            .collect(),
        Err(_) => vec![(4, 64, 1), (8, 64, 1), (4, 64, 4), (4, 64, 64)],
    };
    for (bits, gs, m) in cases {
        let fmt = Format::new("t", gs, bits).unwrap();
        let (_, w, s, b) = random_weights(fmt, n, k, &mut rng);
        let s: Vec<bf16> = s.iter().map(|&v| bf16::from_f32(v)).collect();
        let b: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
        let bytes = (w.len() + 2 * s.len() * 2) as f64;
        // AFFINE_BENCH_BF16X: activations exactly representable in bf16 (as from a bf16 model).
        let bf16_x = std::env::var_os("AFFINE_BENCH_BF16X").is_some();
        let x: Vec<f32> = (0..m * k)
            .map(|_| rng.f32())
            .map(|v| {
                if bf16_x {
                    bf16::from_f32(v).to_f32()
                } else {
                    v
                }
            })
            .collect();
        let mut out = vec![0f32; m * n];
        for isa in Isa::available() {
            if isa == Isa::Scalar {
                continue;
            }
            let mut run =
                || matmul_with(isa, fmt, true, &x, m, k, n, &w, &s, &b, &mut out).unwrap();
            run();
            let iters = (10 / m).max(1);
            let mut best = f64::INFINITY;
            for _ in 0..60 {
                let t = Clock::now();
                for _ in 0..iters {
                    run();
                }
                best = best.min(t.elapsed() / iters as f64);
            }
            println!(
                "bits {bits} gs {gs} m {m:>2} {isa:>10?}: {:8.1} us  {:6.1} GB/s  {:6.1} GFLOP/s",
                best * 1e6,
                bytes / best / 1e9,
                2.0 * (m * n * k) as f64 / best / 1e9
            );
        }
    }
}

/// The dense f32 GEMM on the same shapes as [`bench_matmul`]'s prefill cases, for comparison
/// (run with `--ignored --nocapture`, in release).
#[test]
#[ignore]
fn bench_dense_reference() {
    use crate::backend::cpu::gemm::{MatMut, MatRef, matmul_f32};
    let (k, n) = (4096, 4096);
    let mut rng = Rng(5);
    let w: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
    for m in [1, 4, 64] {
        let x: Vec<f32> = (0..m * k).map(|_| rng.f32()).collect();
        let mut out = vec![0f32; m * n];
        let mut best = f64::INFINITY;
        for _ in 0..20 {
            let t = Clock::now();
            // SAFETY: x is m × k, w is n × k (read transposed), out is m × n.
            unsafe {
                matmul_f32(
                    1,
                    m,
                    n,
                    k,
                    MatRef {
                        ptr: x.as_ptr(),
                        rs: k as isize,
                        cs: 1,
                        bs: 0,
                    },
                    MatRef {
                        ptr: w.as_ptr(),
                        rs: 1,
                        cs: k as isize,
                        bs: 0,
                    },
                    MatMut {
                        ptr: out.as_mut_ptr(),
                        rs: n as isize,
                        cs: 1,
                        bs: 0,
                    },
                    false,
                )
            };
            best = best.min(t.elapsed());
        }
        println!(
            "dense f32 m {m:>2}: {:8.1} us  {:6.1} GFLOP/s",
            best * 1e6,
            2.0 * (m * n * k) as f64 / best / 1e9
        );
    }
}

/// Read bandwidth of one pool's worth of threads over a 256 MB buffer (the roofline for the
/// decode-sized products; run with `--ignored --nocapture`, in release).
#[test]
#[ignore]
fn bench_stream() {
    let v = vec![1u64; 32 << 20];
    let mut best = f64::INFINITY;
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let total = std::sync::atomic::AtomicU64::new(0);
        crate::backend::cpu::pool::parallel_chunks(v.len(), 1 << 20, &|a, b| {
            let s = v[a..b].iter().fold(0u64, |s, &x| s.wrapping_add(x));
            total.fetch_add(s, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(total.into_inner(), v.len() as u64);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "stream read: {:6.1} GB/s",
        (v.len() * 8) as f64 / best / 1e9
    );
}
