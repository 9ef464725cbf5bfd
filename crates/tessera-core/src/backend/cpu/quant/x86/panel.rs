//! Prefill kernels (`m >= matmul::panel_min_m`, about 5 activation rows): the weight rows are
//! repacked into interleaved *panels* once per call, then an integer GEMM micro-kernel runs
//! every activation row over them.
//!
//! # Why this tiling
//!
//! The decode kernels (`blocks32.rs`, `blocks256.rs`) hold one weight row's values in a
//! register and sum along it: every dot product ends in a horizontal reduction, every
//! activation load serves one weight row, and each weight block is decoded again for every
//! tile of 4 activation rows. At `m = 1` that is the right shape (the weights stream once, at
//! memory bandwidth); for a prompt it keeps `vpdpbusd` busy only a third of the time. Here:
//!
//! - **Rows in lanes.** A panel holds 8 consecutive weight rows per 256 bits, decoded to
//!   unsigned bytes and transposed in 4-byte groups: register `j` of block `b` holds values
//!   `4j..4j+4` of that block of each row, one row per i32 lane. `vpdpbusd(acc, w_j,
//!   broadcast(x[4j..4j+4]))` adds 4 products to every row's lane, so 8 of them (a 32-value
//!   block; `SUB / 4` for a K-quant sub-block) leave the block's dot products of all the rows in
//!   one register, already in output order. No horizontal sums; results are stored as
//!   contiguous output columns.
//! - **2-D register blocking.** The micro-kernel takes `R` weight registers by `C` activation
//!   rows: each activation broadcast serves `R` weight registers, each weight register `C`
//!   activation rows, and the `R C` accumulators are independent chains that hide the
//!   multiply-add latency. With the 32 vector registers of AVX-512 (VNNI path) the tile is one
//!   zmm (16 weight rows) by 8 activation rows: 8 integer and 8 f32 accumulators, and the
//!   activation broadcasts fold into `vpdpbusd` as `{1to16}` memory operands, so each step is
//!   one weight load and 8 multiply-adds (measured 2-4% faster than 2 zmm x 4 rows, 5% faster
//!   than the same tile in ymm; on Zen 4 a zmm instruction does the work of two ymm ones but
//!   halves the instructions and loads). AVX2 (16 registers) takes 8 weight rows by 4
//!   activation rows, and adds up to 8 `vpmaddubsw` results in i16 (as far as the format's
//!   largest value allows) before widening them with one `vpmaddwd`.
//! - **Scales once per block, offsets for free.** Per 32-value block the integer sum becomes
//!   f32 once and is scaled by `d_w d_x` (one conversion, one multiply, one FMA per 8
//!   multiply-adds, which bounds the kernel at about 80% of the `vpdpbusd` peak). A weight
//!   offset (Q4_0's 8, Q5_0's 16, the +128 that makes Q8_0/IQ4_NL unsigned for `vpdpbusd`) is
//!   subtracted exactly and at no cost: each block's integer chain starts from `-off Σx_q`,
//!   precomputed per activation block (`Q8Rows::bias`). Q4_1/Q5_1 add `m_w s_x` with one FMA.
//! - **K-quants**: the per-16 (Q4_K/Q5_K: per-32) integer scales multiply each sub-block's
//!   integer sum (`vpmulld`) into a per-super-block accumulator, which becomes f32 once per
//!   super-block: `x_d (d Σ sc isum + dm Σ mi bsum)`. The min term is 8 (Q2_K) or 4 (Q4_K,
//!   Q5_K: per-32 activation sums, `Q8KRows::bsum32`) `vpdpwssd`; Q3_K's and Q6_K's min term is
//!   an offset (`-4`, `-32` times the scale) and starts each sub-block's chain instead
//!   (`Q8KRows::bias`). (Tried: scaling each sub-block in f32 with `d sc` instead of
//!   `vpmulld`: the same speed.)
//!
//! # Loop order and packing
//!
//! Each pool thread takes a contiguous range of weight rows (whole panels), packs them a group
//! at a time into a thread-local buffer (the group sized to stay in L2, `GROUP_BYTES`), and
//! runs every tile of `C` activation rows over every panel of the group: the activation tile
//! (`C k` bytes) is reused across the group's panels from L1, the panels stream from L2, and
//! the weights are read from memory and decoded once per call. Packing is a decode and an 8x8
//! transpose of dwords per 8 rows and 32 values, about the cost of 5 activation rows of
//! multiply-adds; that sets the threshold below which the decode kernels run instead.
//! (Measured: the group size between 128 KB and 900 KB made no difference at `m = 512`.)

use super::blocks32::Block32Avx;
use super::blocks256::Block256Avx;
use super::{Dot, f16_at};
use crate::backend::cpu::quant::act::{KExtras, Q8KRows, Q8Rows};
use crate::backend::cpu::quant::matmul::Tile;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight rows per register (one i32 lane each).
const L: usize = 8;

/// Target size of the packed panels of one row group: well inside L2 (1 MB on Zen 4, 256 KB to
/// 2 MB elsewhere), next to the activation tiles streaming through it.
const GROUP_BYTES: usize = 256 * 1024;

/// Bytes per block of a 32-value panel of `8 r` rows: for each of the 8 value groups `j`, `r`
/// registers of 8 rows' values `4j..4j+4`; then the f32 scales and (affine formats) mins of the
/// `8 r` rows.
pub(super) const fn stride32(r: usize, affine: bool) -> usize {
    256 * r + 32 * r * (1 + affine as usize)
}

/// Pairs of min multipliers per super-block in a K-quant panel: none when the min term is an
/// offset (Q3_K, Q6_K: subtracted through `Q8KRows::bias`), else one per two sub-blocks.
const fn min_pairs(sub: usize, off: i32) -> usize {
    if off != 0 { 0 } else { 128 / sub }
}

/// Offsets inside a super-block of a K-quant panel: values, i32 scales per sub-block, i16
/// pairs of min multipliers, then `d` and `dm` as f32; and the stride.
const fn layout256(r: usize, sub: usize, off: i32) -> (usize, usize, usize, usize) {
    let sc = 2048 * r;
    let mi = sc + (256 / sub) * 32 * r;
    let d = mi + min_pairs(sub, off) * 32 * r;
    (sc, mi, d, d + 64 * r)
}

pub(super) const fn stride256(r: usize, sub: usize, off: i32) -> usize {
    layout256(r, sub, off).3
}

/// The activation sums the panel kernels of `B` need.
pub(super) fn extras256<B: Block256Avx>() -> KExtras {
    KExtras {
        off: B::OFF,
        sums32: B::OFF == 0 && B::SUB == 32,
    }
}

/// Cache-line-aligned scratch storage.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

thread_local! {
    static SCRATCH: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Rows per packed group for panels of `per_row` bytes per weight row, a multiple of `pr`.
fn group_rows(per_row: usize, pr: usize, rows: usize) -> usize {
    let g = (GROUP_BYTES / per_row.max(1)) / pr * pr;
    g.max(pr).min(rows.div_ceil(pr) * pr)
}

/// Calls `f(scratch, group_rows)` with a thread-local buffer big enough for one group.
pub(super) fn with_group(t_rows: usize, per_row: usize, pr: usize, f: impl FnOnce(*mut u8, usize)) {
    let group = group_rows(per_row, pr, t_rows);
    let lines = (group * per_row).div_ceil(64);
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < lines {
                *v = vec![Line([0; 64]); lines];
            }
            f(v.as_mut_ptr() as *mut u8, group)
        }
        // A nested call on this thread (not expected): a private buffer.
        Err(_) => {
            let mut v = vec![Line([0; 64]); lines];
            f(v.as_mut_ptr() as *mut u8, group)
        }
    })
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn store(p: *mut u8, v: __m256i) {
    _mm256_storeu_si256(p as *mut __m256i, v)
}

/// The dword at `p`, in every lane.
#[inline(always)]
unsafe fn bcast4(p: *const u8) -> __m256i {
    _mm256_set1_epi32((p as *const i32).read_unaligned())
}

/// Transposes 8 registers of 8 dwords: out `j` lane `i` = in `i` lane `j`.
#[inline(always)]
pub(super) unsafe fn transpose(v: &[__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
    let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
    let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
    let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
    let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    // u0: dwords 0 (low lane) and 4 (high lane) of rows 0..4; u1: 1 and 5; u2: 2, 6; u3: 3, 7.
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256::<0x20>(u0, u4),
        _mm256_permute2x128_si256::<0x20>(u1, u5),
        _mm256_permute2x128_si256::<0x20>(u2, u6),
        _mm256_permute2x128_si256::<0x20>(u3, u7),
        _mm256_permute2x128_si256::<0x31>(u0, u4),
        _mm256_permute2x128_si256::<0x31>(u1, u5),
        _mm256_permute2x128_si256::<0x31>(u2, u6),
        _mm256_permute2x128_si256::<0x31>(u3, u7),
    ]
}

/// Writes the 8 f32 of `v` to `out[0..valid]` (`valid <= 8`).
#[inline(always)]
unsafe fn put8(out: *mut f32, v: __m256, valid: usize) {
    if valid >= L {
        _mm256_storeu_ps(out, v);
    } else if valid > 0 {
        let mut tmp = [0f32; L];
        _mm256_storeu_ps(tmp.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), out, valid);
    }
}

/// How many `vpmaddubsw` results (pair sums of `u8 <= qmax` times `i8`) can be added in i16
/// without overflow.
#[inline(always)]
fn i16_steps(qmax: i32) -> usize {
    (32767 / (2 * 127 * qmax.max(1))).max(1) as usize
}

/// One step of `n` of a dot product into the i32 lanes of `acc`. VNNI: one `vpdpbusd`. AVX2:
/// the `vpmaddubsw` pair sums collect in the i16 lanes of `s16` for `g` steps before one
/// `vpmaddwd` widens them into `acc` (`g` from [`i16_steps`]).
#[inline(always)]
unsafe fn dot_step<D: Dot>(
    acc: &mut __m256i,
    s16: &mut __m256i,
    u: __m256i,
    x: __m256i,
    j: usize,
    n: usize,
    g: usize,
) {
    if D::FULL_U8 {
        *acc = D::dot_us(*acc, u, x);
        return;
    }
    let p = _mm256_maddubs_epi16(u, x);
    *s16 = if j.is_multiple_of(g) {
        p
    } else {
        _mm256_add_epi16(*s16, p)
    };
    if j % g == g - 1 || j == n - 1 {
        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(*s16, _mm256_set1_epi16(1)));
    }
}

// ---- 256-bit kernels (instantiated for AVX2; generic over the multiply-add primitive).

/// Whether the weights of `B` are stored signed and multiplied with the sign trick (AVX2,
/// whose `vpmaddubsw` would saturate on biased bytes).
#[inline(always)]
fn sign_trick<D: Dot, B: Block32Avx>() -> bool {
    B::SIGNED && !D::FULL_U8
}

/// The offset subtracted through `Q8Rows::bias` for weights of `B` on `D`.
pub(super) fn offset32<D: Dot, B: Block32Avx>() -> i32 {
    if B::SIGNED {
        if D::FULL_U8 { 128 } else { 0 }
    } else {
        B::OFF
    }
}

/// Packs weight rows `r..r + 8R` (rows at or past `end` as zeros) into the panel at `dst`.
#[inline(always)]
unsafe fn pack32<D: Dot, B: Block32Avx, const R: usize>(
    t: &Tile<Q8Rows>,
    r: usize,
    end: usize,
    dst: *mut u8,
) {
    let bs = stride32(R, B::AFFINE);
    let biased = B::SIGNED && D::FULL_U8;
    for b in 0..t.nb {
        let out = dst.add(b * bs);
        for h in 0..R {
            let mut v = [_mm256_setzero_si256(); L];
            let mut d = [0f32; L];
            let mut mn = [0f32; L];
            for i in 0..L {
                let row = r + L * h + i;
                if row < end {
                    let p = t.w.as_ptr().add(row * t.row_bytes + b * B::BYTES);
                    let q = B::q::<D>(p);
                    v[i] = if biased { B::biased(q) } else { q };
                    d[i] = f16_at(p.add(B::D_AT));
                    if B::AFFINE {
                        mn[i] = f16_at(p.add(B::M_AT));
                    }
                }
            }
            let tv = transpose(&v);
            for (j, &x) in tv.iter().enumerate() {
                store(out.add((j * R + h) * 32), x);
            }
            _mm256_storeu_ps(
                out.add(256 * R + 32 * h) as *mut f32,
                _mm256_loadu_ps(d.as_ptr()),
            );
            if B::AFFINE {
                let at = out.add(288 * R + 32 * h) as *mut f32;
                _mm256_storeu_ps(at, _mm256_loadu_ps(mn.as_ptr()));
            }
        }
    }
}

/// `C` activation rows from `i0` against one packed panel (`valid` real rows from column
/// `col`).
#[inline(always)]
unsafe fn tile32<D: Dot, B: Block32Avx, const R: usize, const C: usize>(
    t: &Tile<Q8Rows>,
    panel: *const u8,
    i0: usize,
    col: usize,
    valid: usize,
) {
    let nb = t.nb;
    let a = t.acts;
    let sign = sign_trick::<D, B>();
    let has_bias = offset32::<D, B>() != 0;
    let g16 = i16_steps(if sign { 128 } else { B::QMAX });
    let bs = stride32(R, B::AFFINE);
    let zero = _mm256_setzero_si256();
    let mut xq = [std::ptr::null::<u8>(); C];
    let mut blk_at = [0usize; C];
    for c in 0..C {
        blk_at[c] = (i0 + c) * nb;
        xq[c] = a.qs.as_ptr().add(blk_at[c] * 32) as *const u8;
    }
    let mut facc = [[_mm256_setzero_ps(); C]; R];
    for b in 0..nb {
        let blk = panel.add(b * bs);
        let mut iacc = [[zero; C]; R];
        if has_bias {
            for c in 0..C {
                let v = _mm256_set1_epi32(*a.bias.get_unchecked(blk_at[c] + b));
                for acc in iacc.iter_mut() {
                    acc[c] = v;
                }
            }
        }
        let mut s16 = [[zero; C]; R];
        for j in 0..8 {
            let mut xb = [zero; C];
            for c in 0..C {
                xb[c] = bcast4(xq[c].add(32 * b + 4 * j));
            }
            for h in 0..R {
                let w = load(blk.add((j * R + h) * 32));
                let u = if sign { _mm256_sign_epi8(w, w) } else { w };
                for c in 0..C {
                    let x = if sign {
                        _mm256_sign_epi8(xb[c], w)
                    } else {
                        xb[c]
                    };
                    dot_step::<D>(&mut iacc[h][c], &mut s16[h][c], u, x, j, 8, g16);
                }
            }
        }
        for h in 0..R {
            let dw = _mm256_loadu_ps(blk.add(256 * R + 32 * h) as *const f32);
            for c in 0..C {
                let sc = _mm256_mul_ps(dw, _mm256_set1_ps(*a.d.get_unchecked(blk_at[c] + b)));
                facc[h][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[h][c]), sc, facc[h][c]);
            }
            if B::AFFINE {
                let mw = _mm256_loadu_ps(blk.add(288 * R + 32 * h) as *const f32);
                for c in 0..C {
                    let s = _mm256_set1_ps(*a.s.get_unchecked(blk_at[c] + b));
                    facc[h][c] = _mm256_fmadd_ps(mw, s, facc[h][c]);
                }
            }
        }
    }
    for (h, fh) in facc.iter().enumerate() {
        for (c, &v) in fh.iter().enumerate() {
            let out = t.out.add((i0 + c) * t.ldo + col + L * h);
            put8(out, v, valid.saturating_sub(L * h));
        }
    }
}

/// Activation rows in the next tile: `C`, then what is left in tiles of 4, 2 and 1.
#[inline(always)]
fn tile_rows<const C: usize>(left: usize) -> usize {
    if left >= C {
        C
    } else if left >= 4 {
        4
    } else if left >= 2 {
        2
    } else {
        1
    }
}

/// The whole prefill for one thread's weight rows `t.r0..t.r1` and activation rows
/// `t.i0..t.i0 + t.mt`.
#[inline(always)]
pub(super) unsafe fn run32<D: Dot, B: Block32Avx, const R: usize, const C: usize>(
    t: &Tile<Q8Rows>,
    scratch: *mut u8,
    group: usize,
) {
    let pr = L * R;
    let per_panel = t.nb * stride32(R, B::AFFINE);
    let mut g0 = t.r0;
    while g0 < t.r1 {
        let g1 = (g0 + group).min(t.r1);
        let np = (g1 - g0).div_ceil(pr);
        for p in 0..np {
            pack32::<D, B, R>(t, g0 + p * pr, g1, scratch.add(p * per_panel));
        }
        // (Plain loops, no closures: see the x86 module docs.)
        let (mut i0, i1) = (t.i0, t.i0 + t.mt);
        while i0 < i1 {
            let cc = tile_rows::<C>(i1 - i0);
            for p in 0..np {
                let panel = scratch.add(p * per_panel);
                let col = g0 + p * pr;
                let valid = (g1 - col).min(pr);
                match cc {
                    1 => tile32::<D, B, R, 1>(t, panel, i0, col, valid),
                    2 => tile32::<D, B, R, 2>(t, panel, i0, col, valid),
                    4 if C != 4 => tile32::<D, B, R, 4>(t, panel, i0, col, valid),
                    _ => tile32::<D, B, R, C>(t, panel, i0, col, valid),
                }
            }
            i0 += cc;
        }
        g0 = g1;
    }
}

/// Packs weight rows `r..r + 8R` of a K-quant (rows at or past `end` as zeros).
#[inline(always)]
unsafe fn pack256<D: Dot, B: Block256Avx, const R: usize>(
    t: &Tile<Q8KRows>,
    r: usize,
    end: usize,
    dst: *mut u8,
) {
    let (sc_at, mi_at, d_at, bs) = layout256(R, B::SUB, B::OFF);
    let ns = 256 / B::SUB;
    let zero = _mm256_setzero_si256();
    for sb in 0..t.nb {
        let out = dst.add(sb * bs);
        for h in 0..R {
            let mut q = [[zero; 8]; L];
            let mut sc = [[zero; L]; 2];
            let mut mi = [zero; L];
            let mut d = [0f32; L];
            let mut dm = [0f32; L];
            for i in 0..L {
                let row = r + L * h + i;
                if row < end {
                    let p = t.w.as_ptr().add(row * t.row_bytes + sb * B::BYTES);
                    q[i] = B::load(p).q;
                    let ps = B::panel_scales(p);
                    sc[0][i] = ps.sc[0];
                    sc[1][i] = ps.sc[1];
                    mi[i] = ps.mi;
                    d[i] = ps.d;
                    dm[i] = ps.dm;
                }
            }
            for c in 0..8 {
                let mut v = [zero; L];
                for (vi, qi) in v.iter_mut().zip(&q) {
                    *vi = qi[c];
                }
                let tv = transpose(&v);
                for (j, &x) in tv.iter().enumerate() {
                    store(out.add(((8 * c + j) * R + h) * 32), x);
                }
            }
            // Transposed: register s holds sub-block s's scale for each row.
            for (half, sch) in sc.iter().enumerate().take(ns.div_ceil(8)) {
                let tv = transpose(sch);
                for (j, &x) in tv.iter().enumerate().take(ns - 8 * half) {
                    store(out.add(sc_at + ((8 * half + j) * R + h) * 32), x);
                }
            }
            let pairs = min_pairs(B::SUB, B::OFF);
            if pairs > 0 {
                let tv = transpose(&mi);
                for (p, &x) in tv.iter().enumerate().take(pairs) {
                    store(out.add(mi_at + (p * R + h) * 32), x);
                }
            }
            _mm256_storeu_ps(
                out.add(d_at + 32 * h) as *mut f32,
                _mm256_loadu_ps(d.as_ptr()),
            );
            let dm_at = out.add(d_at + 32 * R + 32 * h) as *mut f32;
            _mm256_storeu_ps(dm_at, _mm256_loadu_ps(dm.as_ptr()));
        }
    }
}

/// `C` activation rows from `i0` against one packed K-quant panel (as [`tile32`]).
#[inline(always)]
unsafe fn tile256<D: Dot, B: Block256Avx, const R: usize, const C: usize>(
    t: &Tile<Q8KRows>,
    panel: *const u8,
    i0: usize,
    col: usize,
    valid: usize,
) {
    let nb = t.nb;
    let a = t.acts;
    let (sc_at, mi_at, d_at, bs) = layout256(R, B::SUB, B::OFF);
    let (ns, js) = (256 / B::SUB, B::SUB / 4);
    let g16 = i16_steps(B::QMAX);
    let zero = _mm256_setzero_si256();
    let mut blk_at = [0usize; C];
    for (c, at) in blk_at.iter_mut().enumerate() {
        *at = (i0 + c) * nb;
    }
    let xq = a.qs.as_ptr() as *const u8;
    let (xs, xs_n) = if B::SUB == 32 {
        (a.bsum32.as_ptr() as *const u8, 8)
    } else {
        (a.bsums.as_ptr() as *const u8, 16)
    };
    let mut facc = [[_mm256_setzero_ps(); C]; R];
    for sb in 0..nb {
        let blk = panel.add(sb * bs);
        let mut acc = [[zero; C]; R];
        for s in 0..ns {
            let mut part = [[zero; C]; R];
            if B::OFF != 0 {
                for c in 0..C {
                    let v = _mm256_set1_epi32(*a.bias.get_unchecked((blk_at[c] + sb) * 16 + s));
                    for ph in part.iter_mut() {
                        ph[c] = v;
                    }
                }
            }
            let mut s16 = [[zero; C]; R];
            for j in 0..js {
                let jj = s * js + j;
                let mut xb = [zero; C];
                for c in 0..C {
                    xb[c] = bcast4(xq.add((blk_at[c] + sb) * 256 + 4 * jj));
                }
                for h in 0..R {
                    let w = load(blk.add((jj * R + h) * 32));
                    for c in 0..C {
                        dot_step::<D>(&mut part[h][c], &mut s16[h][c], w, xb[c], j, js, g16);
                    }
                }
            }
            for h in 0..R {
                let scv = load(blk.add(sc_at + (s * R + h) * 32));
                for c in 0..C {
                    acc[h][c] = _mm256_add_epi32(acc[h][c], _mm256_mullo_epi32(part[h][c], scv));
                }
            }
        }
        let mut mn = [[zero; C]; R];
        for p in 0..min_pairs(B::SUB, B::OFF) {
            let mut xb = [zero; C];
            for c in 0..C {
                xb[c] = bcast4(xs.add(((blk_at[c] + sb) * xs_n + 2 * p) * 2));
            }
            for (h, mh) in mn.iter_mut().enumerate() {
                let mv = load(blk.add(mi_at + (p * R + h) * 32));
                for c in 0..C {
                    mh[c] = D::dot_ww(mh[c], mv, xb[c]);
                }
            }
        }
        for h in 0..R {
            let dv = _mm256_loadu_ps(blk.add(d_at + 32 * h) as *const f32);
            let dmv = _mm256_loadu_ps(blk.add(d_at + 32 * R + 32 * h) as *const f32);
            for c in 0..C {
                let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[h][c]), dv);
                if B::OFF == 0 {
                    v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mn[h][c]), dmv, v);
                }
                let dx = _mm256_set1_ps(*a.d.get_unchecked(blk_at[c] + sb));
                facc[h][c] = _mm256_fmadd_ps(v, dx, facc[h][c]);
            }
        }
    }
    for (h, fh) in facc.iter().enumerate() {
        for (c, &v) in fh.iter().enumerate() {
            let out = t.out.add((i0 + c) * t.ldo + col + L * h);
            put8(out, v, valid.saturating_sub(L * h));
        }
    }
}

/// [`run32`] for the K-quants.
#[inline(always)]
pub(super) unsafe fn run256<D: Dot, B: Block256Avx, const R: usize, const C: usize>(
    t: &Tile<Q8KRows>,
    scratch: *mut u8,
    group: usize,
) {
    let pr = L * R;
    let per_panel = t.nb * stride256(R, B::SUB, B::OFF);
    let mut g0 = t.r0;
    while g0 < t.r1 {
        let g1 = (g0 + group).min(t.r1);
        let np = (g1 - g0).div_ceil(pr);
        for p in 0..np {
            pack256::<D, B, R>(t, g0 + p * pr, g1, scratch.add(p * per_panel));
        }
        let (mut i0, i1) = (t.i0, t.i0 + t.mt);
        while i0 < i1 {
            let cc = tile_rows::<C>(i1 - i0);
            for p in 0..np {
                let panel = scratch.add(p * per_panel);
                let col = g0 + p * pr;
                let valid = (g1 - col).min(pr);
                match cc {
                    1 => tile256::<D, B, R, 1>(t, panel, i0, col, valid),
                    2 => tile256::<D, B, R, 2>(t, panel, i0, col, valid),
                    4 if C != 4 => tile256::<D, B, R, 4>(t, panel, i0, col, valid),
                    _ => tile256::<D, B, R, C>(t, panel, i0, col, valid),
                }
            }
            i0 += cc;
        }
        g0 = g1;
    }
}

// ---- 512-bit kernels (VNNI): `RZ` zmm registers of 16 weight rows each read the panel layout
// above with `R = 2 RZ` (two ymm halves side by side are one zmm); the packing is shared.

/// Writes the first `min(valid, 16)` f32 of `v` to `out`.
#[inline(always)]
unsafe fn put16(out: *mut f32, v: __m512, valid: usize) {
    if valid >= 16 {
        _mm512_storeu_ps(out, v);
    } else if valid > 0 {
        _mm512_mask_storeu_ps(out, ((1u32 << valid) - 1) as u16, v);
    }
}

/// [`tile32`] on zmm registers.
#[inline(always)]
unsafe fn tile32z<B: Block32Avx, const RZ: usize, const C: usize>(
    t: &Tile<Q8Rows>,
    panel: *const u8,
    i0: usize,
    col: usize,
    valid: usize,
) {
    let h2 = 2 * RZ;
    let nb = t.nb;
    let a = t.acts;
    let has_bias = offset32::<super::Vnni, B>() != 0;
    let bs = stride32(h2, B::AFFINE);
    let zero = _mm512_setzero_si512();
    let mut xq = [std::ptr::null::<u8>(); C];
    let mut blk_at = [0usize; C];
    for c in 0..C {
        blk_at[c] = (i0 + c) * nb;
        xq[c] = a.qs.as_ptr().add(blk_at[c] * 32) as *const u8;
    }
    let mut facc = [[_mm512_setzero_ps(); C]; RZ];
    for b in 0..nb {
        let blk = panel.add(b * bs);
        let mut iacc = [[zero; C]; RZ];
        if has_bias {
            for c in 0..C {
                let v = _mm512_set1_epi32(*a.bias.get_unchecked(blk_at[c] + b));
                for acc in iacc.iter_mut() {
                    acc[c] = v;
                }
            }
        }
        for j in 0..8 {
            let mut xb = [zero; C];
            for c in 0..C {
                xb[c] =
                    _mm512_set1_epi32((xq[c].add(32 * b + 4 * j) as *const i32).read_unaligned());
            }
            for (r, acc) in iacc.iter_mut().enumerate() {
                let w = _mm512_loadu_si512(blk.add((j * h2 + 2 * r) * 32) as *const _);
                for c in 0..C {
                    acc[c] = _mm512_dpbusd_epi32(acc[c], w, xb[c]);
                }
            }
        }
        for r in 0..RZ {
            let dw = _mm512_loadu_ps(blk.add(256 * h2 + 64 * r) as *const f32);
            for c in 0..C {
                let sc = _mm512_mul_ps(dw, _mm512_set1_ps(*a.d.get_unchecked(blk_at[c] + b)));
                facc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[r][c]), sc, facc[r][c]);
            }
            if B::AFFINE {
                let mw = _mm512_loadu_ps(blk.add(288 * h2 + 64 * r) as *const f32);
                for c in 0..C {
                    let s = _mm512_set1_ps(*a.s.get_unchecked(blk_at[c] + b));
                    facc[r][c] = _mm512_fmadd_ps(mw, s, facc[r][c]);
                }
            }
        }
    }
    for (r, fr) in facc.iter().enumerate() {
        for (c, &v) in fr.iter().enumerate() {
            let out = t.out.add((i0 + c) * t.ldo + col + 16 * r);
            put16(out, v, valid.saturating_sub(16 * r));
        }
    }
}

/// [`run32`] on zmm registers.
#[inline(always)]
pub(super) unsafe fn run32z<B: Block32Avx, const RZ: usize, const C: usize>(
    t: &Tile<Q8Rows>,
    scratch: *mut u8,
    group: usize,
) {
    let pr = 16 * RZ;
    let per_panel = t.nb * stride32(2 * RZ, B::AFFINE);
    let mut g0 = t.r0;
    while g0 < t.r1 {
        let g1 = (g0 + group).min(t.r1);
        let np = (g1 - g0).div_ceil(pr);
        for p in 0..np {
            pack32z::<B, RZ>(t, g0 + p * pr, g1, scratch.add(p * per_panel));
        }
        let (mut i0, i1) = (t.i0, t.i0 + t.mt);
        while i0 < i1 {
            let cc = tile_rows::<C>(i1 - i0);
            for p in 0..np {
                let panel = scratch.add(p * per_panel);
                let col = g0 + p * pr;
                let valid = (g1 - col).min(pr);
                match cc {
                    1 => tile32z::<B, RZ, 1>(t, panel, i0, col, valid),
                    2 => tile32z::<B, RZ, 2>(t, panel, i0, col, valid),
                    4 if C != 4 => tile32z::<B, RZ, 4>(t, panel, i0, col, valid),
                    _ => tile32z::<B, RZ, C>(t, panel, i0, col, valid),
                }
            }
            i0 += cc;
        }
        g0 = g1;
    }
}

/// `pack32` for the VNNI panel of `2 RZ` halves (const generic arithmetic is not stable).
#[inline(always)]
unsafe fn pack32z<B: Block32Avx, const RZ: usize>(
    t: &Tile<Q8Rows>,
    r: usize,
    end: usize,
    dst: *mut u8,
) {
    match RZ {
        1 => pack32::<super::Vnni, B, 2>(t, r, end, dst),
        2 => pack32::<super::Vnni, B, 4>(t, r, end, dst),
        _ => unreachable!(),
    }
}

/// `pack256` for the VNNI panel of `2 RZ` halves.
#[inline(always)]
unsafe fn pack256z<B: Block256Avx, const RZ: usize>(
    t: &Tile<Q8KRows>,
    r: usize,
    end: usize,
    dst: *mut u8,
) {
    match RZ {
        1 => pack256::<super::Vnni, B, 2>(t, r, end, dst),
        2 => pack256::<super::Vnni, B, 4>(t, r, end, dst),
        _ => unreachable!(),
    }
}

/// [`tile256`] on zmm registers.
#[inline(always)]
unsafe fn tile256z<B: Block256Avx, const RZ: usize, const C: usize>(
    t: &Tile<Q8KRows>,
    panel: *const u8,
    i0: usize,
    col: usize,
    valid: usize,
) {
    let h2 = 2 * RZ;
    let nb = t.nb;
    let a = t.acts;
    let (sc_at, mi_at, d_at, bs) = layout256(h2, B::SUB, B::OFF);
    let (ns, js) = (256 / B::SUB, B::SUB / 4);
    let zero = _mm512_setzero_si512();
    let mut blk_at = [0usize; C];
    for (c, at) in blk_at.iter_mut().enumerate() {
        *at = (i0 + c) * nb;
    }
    let xq = a.qs.as_ptr() as *const u8;
    let (xs, xs_n) = if B::SUB == 32 {
        (a.bsum32.as_ptr() as *const u8, 8)
    } else {
        (a.bsums.as_ptr() as *const u8, 16)
    };
    let mut facc = [[_mm512_setzero_ps(); C]; RZ];
    for sb in 0..nb {
        let blk = panel.add(sb * bs);
        let mut acc = [[zero; C]; RZ];
        for s in 0..ns {
            let mut part = [[zero; C]; RZ];
            if B::OFF != 0 {
                for c in 0..C {
                    let v = _mm512_set1_epi32(*a.bias.get_unchecked((blk_at[c] + sb) * 16 + s));
                    for pr in part.iter_mut() {
                        pr[c] = v;
                    }
                }
            }
            for j in 0..js {
                let jj = s * js + j;
                let mut xb = [zero; C];
                for c in 0..C {
                    let p = xq.add((blk_at[c] + sb) * 256 + 4 * jj) as *const i32;
                    xb[c] = _mm512_set1_epi32(p.read_unaligned());
                }
                for (r, pr) in part.iter_mut().enumerate() {
                    let w = _mm512_loadu_si512(blk.add((jj * h2 + 2 * r) * 32) as *const _);
                    for c in 0..C {
                        pr[c] = _mm512_dpbusd_epi32(pr[c], w, xb[c]);
                    }
                }
            }
            for r in 0..RZ {
                let scv = _mm512_loadu_si512(blk.add(sc_at + (s * h2 + 2 * r) * 32) as *const _);
                for c in 0..C {
                    acc[r][c] = _mm512_add_epi32(acc[r][c], _mm512_mullo_epi32(part[r][c], scv));
                }
            }
        }
        let mut mn = [[zero; C]; RZ];
        for p in 0..min_pairs(B::SUB, B::OFF) {
            let mut xb = [zero; C];
            for c in 0..C {
                let q = xs.add(((blk_at[c] + sb) * xs_n + 2 * p) * 2) as *const i32;
                xb[c] = _mm512_set1_epi32(q.read_unaligned());
            }
            for (r, mr) in mn.iter_mut().enumerate() {
                let mv = _mm512_loadu_si512(blk.add(mi_at + (p * h2 + 2 * r) * 32) as *const _);
                for c in 0..C {
                    mr[c] = _mm512_dpwssd_epi32(mr[c], mv, xb[c]);
                }
            }
        }
        for r in 0..RZ {
            let dv = _mm512_loadu_ps(blk.add(d_at + 64 * r) as *const f32);
            let dmv = _mm512_loadu_ps(blk.add(d_at + 32 * h2 + 64 * r) as *const f32);
            for c in 0..C {
                let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][c]), dv);
                if B::OFF == 0 {
                    v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mn[r][c]), dmv, v);
                }
                let dx = _mm512_set1_ps(*a.d.get_unchecked(blk_at[c] + sb));
                facc[r][c] = _mm512_fmadd_ps(v, dx, facc[r][c]);
            }
        }
    }
    for (r, fr) in facc.iter().enumerate() {
        for (c, &v) in fr.iter().enumerate() {
            let out = t.out.add((i0 + c) * t.ldo + col + 16 * r);
            put16(out, v, valid.saturating_sub(16 * r));
        }
    }
}

/// [`run256`] on zmm registers.
#[inline(always)]
pub(super) unsafe fn run256z<B: Block256Avx, const RZ: usize, const C: usize>(
    t: &Tile<Q8KRows>,
    scratch: *mut u8,
    group: usize,
) {
    let pr = 16 * RZ;
    let per_panel = t.nb * stride256(2 * RZ, B::SUB, B::OFF);
    let mut g0 = t.r0;
    while g0 < t.r1 {
        let g1 = (g0 + group).min(t.r1);
        let np = (g1 - g0).div_ceil(pr);
        for p in 0..np {
            pack256z::<B, RZ>(t, g0 + p * pr, g1, scratch.add(p * per_panel));
        }
        let (mut i0, i1) = (t.i0, t.i0 + t.mt);
        while i0 < i1 {
            let cc = tile_rows::<C>(i1 - i0);
            for p in 0..np {
                let panel = scratch.add(p * per_panel);
                let col = g0 + p * pr;
                let valid = (g1 - col).min(pr);
                match cc {
                    1 => tile256z::<B, RZ, 1>(t, panel, i0, col, valid),
                    2 => tile256z::<B, RZ, 2>(t, panel, i0, col, valid),
                    4 if C != 4 => tile256z::<B, RZ, 4>(t, panel, i0, col, valid),
                    _ => tile256z::<B, RZ, C>(t, panel, i0, col, valid),
                }
            }
            i0 += cc;
        }
        g0 = g1;
    }
}
