//! Checks every entry point against a naive f64 reference over many shapes and layouts.

use super::*;

/// Small deterministic generator (xorshift64*), so the tests need no extra dependency (also
/// used by the small-M kernels' own tests).
pub(super) struct Rng(pub(super) u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

trait TestElem: Copy + 'static {
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Relative tolerance on the sum of |products|, and the output rounding unit.
    const TOL: f64;
    const ROUND: f64;
    unsafe fn mm(
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a: MatRef<Self>,
        b: MatRef<Self>,
        c: MatMut<Self>,
        acc: bool,
    );
}
impl TestElem for f32 {
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    const TOL: f64 = 1e-5;
    const ROUND: f64 = 1.2e-7;
    unsafe fn mm(
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a: MatRef<f32>,
        b: MatRef<f32>,
        c: MatMut<f32>,
        acc: bool,
    ) {
        matmul_f32(batch, m, n, k, a, b, c, acc)
    }
}
impl TestElem for f64 {
    fn from_f64(x: f64) -> f64 {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    const TOL: f64 = 1e-13;
    const ROUND: f64 = 2.3e-16;
    unsafe fn mm(
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a: MatRef<f64>,
        b: MatRef<f64>,
        c: MatMut<f64>,
        acc: bool,
    ) {
        matmul_f64(batch, m, n, k, a, b, c, acc)
    }
}
impl TestElem for F16 {
    fn from_f64(x: f64) -> F16 {
        F16::from_f64(x)
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    // f32 accumulation; the gemm crate may round intermediate results to f16 between k blocks.
    const TOL: f64 = 2e-3;
    const ROUND: f64 = 1e-3;
    unsafe fn mm(
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a: MatRef<F16>,
        b: MatRef<F16>,
        c: MatMut<F16>,
        acc: bool,
    ) {
        matmul_f16(batch, m, n, k, a, b, c, acc)
    }
}
impl TestElem for Bf16 {
    fn from_f64(x: f64) -> Bf16 {
        Bf16::from_f64(x)
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    const TOL: f64 = 1e-5;
    const ROUND: f64 = 7.9e-3;
    unsafe fn mm(
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a: MatRef<Bf16>,
        b: MatRef<Bf16>,
        c: MatMut<Bf16>,
        acc: bool,
    ) {
        matmul_bf16(batch, m, n, k, a, b, c, acc)
    }
}

/// Layout of one operand.
#[derive(Clone, Copy, Debug)]
enum Lay {
    RowMajor,
    ColMajor,
    /// Row-major with padded rows.
    Padded,
    /// Rows in reverse order (negative row stride).
    NegRows,
    /// Column-major with reversed columns (negative column stride).
    NegCols,
    /// Both strides > 1.
    Strided,
}
const LAYS: [Lay; 6] = [
    Lay::RowMajor,
    Lay::ColMajor,
    Lay::Padded,
    Lay::NegRows,
    Lay::NegCols,
    Lay::Strided,
];

/// A batched operand in its own buffer; `base` is the offset of element (0, 0, 0).
struct Buf<T> {
    data: Vec<T>,
    base: usize,
    rs: isize,
    cs: isize,
    bs: isize,
}

fn make<T: TestElem>(
    rng: &mut Rng,
    batch: usize,
    rows: usize,
    cols: usize,
    lay: Lay,
    broadcast: bool,
) -> Buf<T> {
    let (r, c) = (rows as isize, cols as isize);
    let (rs, cs, size) = match lay {
        Lay::RowMajor => (c, 1, r * c),
        Lay::ColMajor => (1, r, r * c),
        Lay::Padded => (c + 3, 1, r * (c + 3)),
        Lay::NegRows => (-c, 1, r * c),
        Lay::NegCols => (1, -r, r * c),
        Lay::Strided => (2 * c + 1, 2, r * (2 * c + 1)),
    };
    let bs = if broadcast { 0 } else { size + 5 };
    let items = if broadcast { 1 } else { batch.max(1) };
    // Lowest offset among all elements relative to (0, 0, 0).
    let lo = (if rs < 0 { (r - 1).max(0) * rs } else { 0 })
        + (if cs < 0 { (c - 1).max(0) * cs } else { 0 });
    let len = (items as isize * (size + 5) + 8) as usize;
    let data = (0..len).map(|_| T::from_f64(rng.unit())).collect();
    Buf {
        data,
        base: (-lo) as usize + 2,
        rs,
        cs,
        bs,
    }
}

impl<T: TestElem> Buf<T> {
    fn idx(&self, b: usize, i: usize, j: usize) -> usize {
        (self.base as isize + b as isize * self.bs + i as isize * self.rs + j as isize * self.cs)
            as usize
    }
    fn get(&self, b: usize, i: usize, j: usize) -> f64 {
        self.data[self.idx(b, i, j)].to_f64()
    }
    fn r(&self) -> MatRef<T> {
        MatRef {
            ptr: self.data.as_ptr().wrapping_add(self.base),
            rs: self.rs,
            cs: self.cs,
            bs: self.bs,
        }
    }
    fn w(&mut self) -> MatMut<T> {
        MatMut {
            ptr: self.data.as_mut_ptr().wrapping_add(self.base),
            rs: self.rs,
            cs: self.cs,
            bs: self.bs,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_one<T: TestElem>(
    rng: &mut Rng,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    la: Lay,
    lb: Lay,
    lc: Lay,
    bca: bool,
    bcb: bool,
    acc: bool,
) {
    let a = make::<T>(rng, batch, m, k, la, bca);
    let b = make::<T>(rng, batch, k, n, lb, bcb);
    let mut c = make::<T>(rng, batch, m, n, lc, false);
    let before = c.data.clone();
    // SAFETY: the buffers hold every addressed element and do not overlap.
    unsafe { T::mm(batch, m, n, k, a.r(), b.r(), c.w(), acc) };
    let mut touched = vec![false; c.data.len()];
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                let mut mag = 0.0;
                for kk in 0..k {
                    let p = a.get(bi, i, kk) * b.get(bi, kk, j);
                    s += p;
                    mag += p.abs();
                }
                let idx = c.idx(bi, i, j);
                touched[idx] = true;
                let old = before[idx].to_f64();
                if acc {
                    s += old;
                    mag += old.abs();
                }
                let got = c.data[idx].to_f64();
                let tol = T::TOL * mag + T::ROUND * s.abs() + 1e-30;
                assert!(
                    (got - s).abs() <= tol,
                    "{} b={batch} m={m} n={n} k={k} A={la:?}{} B={lb:?}{} C={lc:?} acc={acc}: C[{bi},{i},{j}] = {got}, want {s} (tol {tol})",
                    std::any::type_name::<T>(),
                    if bca { "(bcast)" } else { "" },
                    if bcb { "(bcast)" } else { "" },
                );
            }
        }
    }
    for (idx, t) in touched.iter().enumerate() {
        if !t {
            assert!(
                c.data[idx].to_f64().to_bits() == before[idx].to_f64().to_bits(),
                "wrote outside C at {idx}"
            );
        }
    }
}

/// Sizes around the kernels' block edges.
const DIMS: [usize; 14] = [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 49, 65, 100];

fn sweep<T: TestElem>(seed: u64, cases: usize) {
    let mut rng = Rng(seed);
    for _ in 0..cases {
        let m = DIMS[rng.below(DIMS.len())];
        let n = DIMS[rng.below(DIMS.len())];
        let k = DIMS[rng.below(DIMS.len())];
        let batch = [1, 1, 2, 3][rng.below(4)];
        let (la, lb, lc) = (LAYS[rng.below(6)], LAYS[rng.below(6)], LAYS[rng.below(6)]);
        let (bca, bcb) = (rng.below(4) == 0, rng.below(4) == 0);
        let acc = rng.below(2) == 0;
        check_one::<T>(&mut rng, batch, m, n, k, la, lb, lc, bca, bcb, acc);
    }
}

/// Every layout combination on shapes that hit the small and the large paths.
fn layouts<T: TestElem>(seed: u64) {
    let mut rng = Rng(seed);
    for &(m, n, k) in &[
        (1, 37, 29),
        (5, 70, 33),
        (17, 65, 31),
        (40, 50, 300),
        (3, 1, 20),
    ] {
        for la in LAYS {
            for lb in LAYS {
                let lc = LAYS[rng.below(6)];
                let acc = rng.below(2) == 0;
                check_one::<T>(&mut rng, 1, m, n, k, la, lb, lc, false, false, acc);
            }
        }
    }
}

/// Larger products: GEMV-like and blocked shapes (k above the bf16 kernel's k block).
fn large<T: TestElem>(seed: u64) {
    let mut rng = Rng(seed);
    for &(batch, m, n, k, la, lb) in &[
        (1, 1, 1000, 600, Lay::RowMajor, Lay::ColMajor),
        (1, 1, 1000, 600, Lay::RowMajor, Lay::RowMajor),
        (1, 700, 1, 513, Lay::RowMajor, Lay::RowMajor),
        (2, 7, 300, 777, Lay::RowMajor, Lay::ColMajor),
        (1, 13, 257, 300, Lay::ColMajor, Lay::RowMajor),
        (1, 130, 150, 600, Lay::RowMajor, Lay::RowMajor),
        (1, 129, 200, 530, Lay::RowMajor, Lay::ColMajor),
        (2, 64, 100, 257, Lay::ColMajor, Lay::RowMajor),
        // k above one packed k block for f32 (2048) and bf16 (4096): f32 scratch between blocks.
        (1, 20, 40, 4500, Lay::RowMajor, Lay::ColMajor),
        (1, 33, 17, 4101, Lay::ColMajor, Lay::RowMajor),
    ] {
        check_one::<T>(
            &mut rng,
            batch,
            m,
            n,
            k,
            la,
            lb,
            Lay::RowMajor,
            false,
            false,
            false,
        );
        check_one::<T>(
            &mut rng,
            batch,
            m,
            n,
            k,
            la,
            lb,
            Lay::ColMajor,
            false,
            batch > 1,
            true,
        );
    }
}

#[test]
fn f32_sweep() {
    sweep::<f32>(1, 400);
    layouts::<f32>(11);
    large::<f32>(21);
}
#[test]
fn f64_sweep() {
    sweep::<f64>(2, 400);
    layouts::<f64>(12);
    large::<f64>(22);
}
#[test]
fn f16_sweep() {
    sweep::<F16>(3, 400);
    layouts::<F16>(13);
    large::<F16>(23);
}
#[test]
fn bf16_sweep() {
    sweep::<Bf16>(4, 400);
    layouts::<Bf16>(14);
    large::<Bf16>(24);
}
/// The packed AVX2 f32 kernel (what CPUs without AVX-512 run), also where the CPU has
/// AVX-512. Sizes past its 6 x 16 tile, its A row blocks (252 rows at most, and more blocks
/// than threads: 700 rows), its k block (512: the scratch between blocks) and its column
/// blocks (1248 columns at k = 2100).
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_packed_avx2() {
    if !packed_avx2_f32() {
        eprintln!("skipped: no AVX2 and FMA on this CPU, or TESSERA_PACKED_AVX2=0");
        return;
    }
    with_avx2_kernels(|| {
        sweep::<f32>(6, 300);
        layouts::<f32>(16);
        large::<f32>(26);
        let mut rng = Rng(36);
        for &(m, n, k) in &[
            (300, 70, 64),
            (61, 300, 2100),
            (95, 33, 4100),
            (700, 40, 520),
            (61, 1300, 2100),
        ] {
            for (la, lb) in [
                (Lay::RowMajor, Lay::ColMajor),
                (Lay::ColMajor, Lay::Strided),
            ] {
                check_one::<f32>(
                    &mut rng,
                    1,
                    m,
                    n,
                    k,
                    la,
                    lb,
                    Lay::RowMajor,
                    false,
                    false,
                    true,
                );
            }
        }
    });
}

/// The same with the AMX tile path off (a no-op where the CPU has none): the AVX-512 BF16
/// kernels stay tested on machines with AMX.
#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_sweep_without_amx() {
    crate::backend::cpu::amx::without(|| {
        sweep::<Bf16>(5, 400);
        layouts::<Bf16>(15);
        large::<Bf16>(25);
    });
}

/// The portable small kernels, exercised directly (they are the fallback off AVX-512).
#[test]
fn portable_small_kernels() {
    let mut rng = Rng(5);
    for &(m, nc, k) in &[
        (1usize, 5usize, 3usize),
        (3, 9, 17),
        (15, 70, 40),
        (4, 300, 9),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.unit() as f32).collect();
        let bt: Vec<f32> = (0..nc * k).map(|_| rng.unit() as f32).collect(); // column j at j*k
        let want: Vec<f64> = (0..m * nc)
            .map(|t| {
                (0..k)
                    .map(|kk| a[(t / nc) * k + kk] as f64 * bt[(t % nc) * k + kk] as f64)
                    .sum()
            })
            .collect();
        let mut c = vec![0f32; m * nc];
        let cm = MatMut {
            ptr: c.as_mut_ptr(),
            rs: nc as isize,
            cs: 1,
            bs: 0,
        };
        // SAFETY: buffers sized for these shapes.
        unsafe {
            small::dot_portable(
                m,
                nc,
                k,
                a.as_ptr(),
                k as isize,
                bt.as_ptr(),
                k as isize,
                cm,
                false,
            )
        };
        for (g, w) in c.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-4, "dot {g} vs {w}");
        }
        let ap: Vec<f32> = (0..k * m).map(|t| a[(t % m) * k + t / m]).collect();
        let b: Vec<f32> = (0..k * nc).map(|t| bt[(t % nc) * k + t / nc]).collect(); // row-major
        let ld = nc.div_ceil(16) * 16;
        let mut c2 = vec![0f32; m * ld];
        // SAFETY: as above.
        unsafe {
            small::axpy_portable::<f32>(
                m,
                nc,
                k,
                ap.as_ptr(),
                b.as_ptr(),
                nc as isize,
                c2.as_mut_ptr(),
                ld,
            )
        };
        for (t, w) in want.iter().enumerate() {
            let g = c2[(t / nc) * ld + t % nc];
            assert!((g as f64 - w).abs() < 1e-4, "axpy {g} vs {w}");
        }
    }
}
