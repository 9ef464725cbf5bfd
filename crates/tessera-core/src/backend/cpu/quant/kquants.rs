//! The 256-value super-block formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K): scalar reference
//! dequantization (bit-equal to ggml's `dequantize_row_*`) and simple round-to-nearest
//! quantizers.
//!
//! The quantizers pick each sub-block's scale (and min) from its range, quantize the scales
//! against the super-block scale, then requantize the values with the rounded scales, as ggml's
//! `quantize_row_*_ref` do, but without ggml's iterative scale search (`make_qkx2_quants`,
//! `make_q3_quants`, rmse-weighted `make_qx_quants`). Their blocks decode the same way in ggml;
//! the error is a little larger than ggml's. Q8_K, the activation format of the K-quant dot
//! products, follows `quantize_row_q8_K_ref` exactly.

use super::legacy::{f16_at, put_f16};
use half::f16;

/// Values per super-block.
pub(super) const QK_K: usize = 256;

/// ggml's `nearest_int`: round half to even (the `+ 1.5 * 2^23` trick, valid for |v| < 2^22).
#[inline]
pub(super) fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// The eight 6-bit (scale, min) pairs of a Q4_K/Q5_K super-block, unpacked from their 12 bytes
/// (ggml's `get_scale_min_k4` for `j = 0..8`): returned as two little-endian byte lanes
/// `(scales, mins)`, byte `j` holding sub-block `j`.
///
/// Bytes 0..4 hold scales 0..3 in their low 6 bits, bytes 4..8 mins 0..3; bytes 8..12 hold the
/// low 4 bits of scales 4..7 (low nibble) and mins 4..7 (high nibble), whose top 2 bits are the
/// top bits of bytes 0..4 (scales) and 4..8 (mins).
#[inline]
pub(super) fn unpack_scale_min_k4(s: &[u8]) -> (u64, u64) {
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, c) = (w(0), w(1), w(2));
    let sc_lo = a & 0x3F3F_3F3F;
    let mn_lo = b & 0x3F3F_3F3F;
    let sc_hi = (c & 0x0F0F_0F0F) | (((a >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((c >> 4) & 0x0F0F_0F0F) | (((b >> 6) & 0x0303_0303) << 4);
    (
        sc_lo as u64 | ((sc_hi as u64) << 32),
        mn_lo as u64 | ((mn_hi as u64) << 32),
    )
}

/// The sixteen 6-bit Q3_K scales (still offset by 32), byte `j` of the result for sub-block `j`.
///
/// Bytes 0..8 hold the low 4 bits (sub-blocks 0..7 in the low nibbles, 8..15 in the high
/// nibbles); bytes 8..12 hold the top 2 bits, byte `8 + j % 4` at bit `2 * (j / 4)`.
#[inline]
pub(super) fn unpack_scales_q3k(s: &[u8]) -> [u8; 16] {
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, c) = (w(0), w(1), w(2));
    const LO: u32 = 0x0F0F_0F0F;
    const HI: u32 = 0x0303_0303;
    let words = [
        (a & LO) | ((c & HI) << 4),
        (b & LO) | (((c >> 2) & HI) << 4),
        ((a >> 4) & LO) | (((c >> 4) & HI) << 4),
        ((b >> 4) & LO) | (((c >> 6) & HI) << 4),
    ];
    let mut out = [0u8; 16];
    for (i, wd) in words.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&wd.to_le_bytes());
    }
    out
}

/// Q2_K `{scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16}`: value `v` is
/// `d * (scales[v/16] & 15) * q - dmin * (scales[v/16] >> 4)` with the 2-bit
/// `q = qs[32 (v/128) + v%32] >> (2 ((v/32) % 4)) & 3`.
pub(super) fn dequant_q2_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    for v in 0..QK_K {
        let sc = b[v / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        let q = (b[16 + 32 * (v / 128) + v % 32] >> (2 * ((v / 32) % 4))) & 3;
        y[v] = dl * q as f32 - ml;
    }
}

/// Q3_K `{hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16}`: value `v` is
/// `d * (s[v/16] - 32) * (q2 - 4 * !hbit)`, q2 packed as in Q2_K, `hbit = hmask[v%32] >> (v/32) & 1`.
pub(super) fn dequant_q3_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 108);
    let sc = unpack_scales_q3k(&b[96..108]);
    for v in 0..QK_K {
        let dl = d * (sc[v / 16] as i32 - 32) as f32;
        let q2 = ((b[32 + 32 * (v / 128) + v % 32] >> (2 * ((v / 32) % 4))) & 3) as i32;
        let h = (b[v % 32] >> (v / 32)) & 1;
        y[v] = dl * (q2 - if h != 0 { 0 } else { 4 }) as f32;
    }
}

/// Q4_K `{d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]}`: eight sub-blocks of 32 with
/// 6-bit scale and min ([`unpack_scale_min_k4`]); value `v` is `d sc - dmin m` applied to the
/// nibble of `qs[32 (v/64) + v%32]` (low for `(v/32)` even, high for odd).
pub(super) fn dequant_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = unpack_scale_min_k4(&b[4..16]);
    for j in 0..8 {
        let d1 = d * ((sc >> (8 * j)) & 0xFF) as f32;
        let m1 = dmin * ((mn >> (8 * j)) & 0xFF) as f32;
        let qs = &b[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
        for l in 0..32 {
            let q = if j % 2 == 0 { qs[l] & 0x0F } else { qs[l] >> 4 };
            y[32 * j + l] = d1 * q as f32 - m1;
        }
    }
}

/// Q5_K `{d, dmin, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]}`: Q4_K plus a fifth bit,
/// `qh[v%32] >> (v/32) & 1`.
pub(super) fn dequant_q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = unpack_scale_min_k4(&b[4..16]);
    for j in 0..8 {
        let d1 = d * ((sc >> (8 * j)) & 0xFF) as f32;
        let m1 = dmin * ((mn >> (8 * j)) & 0xFF) as f32;
        let qs = &b[48 + 32 * (j / 2)..48 + 32 * (j / 2) + 32];
        for l in 0..32 {
            let q = if j % 2 == 0 { qs[l] & 0x0F } else { qs[l] >> 4 };
            let h = if (b[16 + l] >> j) & 1 != 0 { 16 } else { 0 };
            y[32 * j + l] = d1 * (q + h) as f32 - m1;
        }
    }
}

/// Q6_K `{ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16}`: value `v` in half `n = v/128`,
/// quarter `t = (v/32) % 4`, lane `l = v%32`: low 4 bits from `ql[64n + l + 32 (t%2)]` (low nibble
/// for `t < 2`), high 2 bits `qh[32n + l] >> 2t`; `x = d * scales[v/16] * (q - 32)`.
pub(super) fn dequant_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for v in 0..QK_K {
        let (n, t, l) = (v / 128, (v / 32) % 4, v % 32);
        let lb = b[64 * n + l + 32 * (t % 2)];
        let lo = if t < 2 { lb & 0x0F } else { lb >> 4 };
        let hi = (b[128 + 32 * n + l] >> (2 * t)) & 3;
        let q = (lo | (hi << 4)) as i32 - 32;
        let sc = b[192 + v / 16] as i8;
        y[v] = d * sc as f32 * q as f32;
    }
}

/// Q8_K `{d: f32, qs: [i8; 256], bsums: [i16; 16]}`: `x = d q`.
pub(super) fn dequant_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for v in 0..QK_K {
        y[v] = d * (b[4 + v] as i8) as f32;
    }
}

/// Affine fit of one sub-block for `q` in `0..=nmax`: `(scale, min)` with `x ≈ scale q - min`,
/// `min >= 0` (the range is widened to include zero, as ggml does).
fn affine_range(x: &[f32], nmax: f32) -> (f32, f32) {
    let lo = x.iter().fold(f32::INFINITY, |a, &v| a.min(v)).min(0.0);
    let hi = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    if hi <= lo {
        return (0.0, -lo);
    }
    ((hi - lo) / nmax, -lo)
}

/// The signed value of largest magnitude (first on ties) and that magnitude.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Quantizes `v` to the closest multiple of the 4- or 6-bit grid `1/inv`, clamped to `0..=hi`.
#[inline]
fn grid(v: f32, inv: f32, hi: i32) -> i32 {
    nearest_int(inv * v).clamp(0, hi)
}

/// Requantizes with the rounded scales: `l = round((x + dm) / d)` clamped to `0..=nmax`.
fn requant_affine(x: &[f32], d: f32, dm: f32, nmax: i32, out: &mut [u8]) {
    if d == 0.0 {
        out.fill(0);
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
    }
}

pub(super) fn quant_q2_k(x: &[f32], b: &mut [u8]) {
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    for j in 0..16 {
        (scales[j], mins[j]) = affine_range(&x[16 * j..16 * j + 16], 3.0);
    }
    let max_scale = scales.iter().fold(0f32, |a, &v| a.max(v));
    let max_min = mins.iter().fold(0f32, |a, &v| a.max(v));
    let inv_s = if max_scale > 0.0 {
        15.0 / max_scale
    } else {
        0.0
    };
    let inv_m = if max_min > 0.0 { 15.0 / max_min } else { 0.0 };
    for j in 0..16 {
        b[j] = (grid(scales[j], inv_s, 15) | (grid(mins[j], inv_m, 15) << 4)) as u8;
    }
    put_f16(b, 80, max_scale / 15.0);
    put_f16(b, 82, max_min / 15.0);
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut l = [0u8; QK_K];
    for j in 0..16 {
        let dl = d * (b[j] & 0x0F) as f32;
        let ml = dmin * (b[j] >> 4) as f32;
        requant_affine(
            &x[16 * j..16 * j + 16],
            dl,
            ml,
            3,
            &mut l[16 * j..16 * j + 16],
        );
    }
    pack_2bit(&l, &mut b[16..80]);
}

/// Packs 256 2-bit values: value `128 n + 32 s + i` into bits `2s` of byte `32 n + i`.
fn pack_2bit(l: &[u8], qs: &mut [u8]) {
    for n in 0..2 {
        for i in 0..32 {
            let v = |s: usize| l[128 * n + 32 * s + i] & 3;
            qs[32 * n + i] = v(0) | (v(1) << 2) | (v(2) << 4) | (v(3) << 6);
        }
    }
}

pub(super) fn quant_q3_k(x: &[f32], b: &mut [u8]) {
    b.fill(0);
    let mut scales = [0f32; 16];
    for j in 0..16 {
        let (max, amax) = signed_absmax(&x[16 * j..16 * j + 16]);
        scales[j] = if amax < 1e-15 { 0.0 } else { max / -4.0 };
    }
    let (max_scale, _) = signed_absmax(&scales);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            let l = (nearest_int(iscale * s).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                b[96 + j] = l & 0x0F;
            } else {
                b[96 + j - 8] |= (l & 0x0F) << 4;
            }
            b[96 + 8 + j % 4] |= (l >> 4) << (2 * (j / 4));
        }
        put_f16(b, 108, 1.0 / iscale);
    }
    let d = f16_at(b, 108);
    let sc = unpack_scales_q3k(&b[96..108]);
    let mut l = [4u8; QK_K];
    for (j, &s) in sc.iter().enumerate() {
        let dl = d * (s as i32 - 32) as f32;
        if dl == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / dl).clamp(-4, 3) + 4) as u8;
        }
    }
    for (v, lv) in l.iter_mut().enumerate() {
        if *lv > 3 {
            b[v % 32] |= 1 << (v / 32);
            *lv -= 4;
        }
    }
    pack_2bit(&l, &mut b[32..96]);
}

/// Shared by Q4_K (`nmax = 15`) and Q5_K (`nmax = 31`): returns the 256 requantized values after
/// writing `d`, `dmin` and the 12 scale bytes at `b[0..16]`.
fn quant_kx(x: &[f32], b: &mut [u8], nmax: i32) -> [u8; QK_K] {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        (scales[j], mins[j]) = affine_range(&x[32 * j..32 * j + 32], nmax as f32);
    }
    let max_scale = scales.iter().fold(0f32, |a, &v| a.max(v));
    let max_min = mins.iter().fold(0f32, |a, &v| a.max(v));
    let inv_s = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_m = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let s = &mut b[4..16];
    s.fill(0);
    for j in 0..8 {
        let ls = grid(scales[j], inv_s, 63) as u8;
        let lm = grid(mins[j], inv_m, 63) as u8;
        if j < 4 {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(b, 0, max_scale / 63.0);
    put_f16(b, 2, max_min / 63.0);
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = unpack_scale_min_k4(&b[4..16]);
    let mut l = [0u8; QK_K];
    for j in 0..8 {
        let dl = d * ((sc >> (8 * j)) & 0xFF) as f32;
        let ml = dmin * ((mn >> (8 * j)) & 0xFF) as f32;
        requant_affine(
            &x[32 * j..32 * j + 32],
            dl,
            ml,
            nmax,
            &mut l[32 * j..32 * j + 32],
        );
    }
    l
}

pub(super) fn quant_q4_k(x: &[f32], b: &mut [u8]) {
    let l = quant_kx(x, b, 15);
    for n in 0..4 {
        for i in 0..32 {
            b[16 + 32 * n + i] = l[64 * n + i] | (l[64 * n + 32 + i] << 4);
        }
    }
}

pub(super) fn quant_q5_k(x: &[f32], b: &mut [u8]) {
    let l = quant_kx(x, b, 31);
    b[16..48].fill(0);
    for n in 0..4 {
        for i in 0..32 {
            let (lo, hi) = (l[64 * n + i], l[64 * n + 32 + i]);
            b[48 + 32 * n + i] = (lo & 0x0F) | ((hi & 0x0F) << 4);
            b[16 + i] |= ((lo >> 4) << (2 * n)) | ((hi >> 4) << (2 * n + 1));
        }
    }
}

pub(super) fn quant_q6_k(x: &[f32], b: &mut [u8]) {
    b.fill(0);
    let mut scales = [0f32; 16];
    for j in 0..16 {
        let (max, amax) = signed_absmax(&x[16 * j..16 * j + 16]);
        scales[j] = if amax < 1e-15 { 0.0 } else { max / -32.0 };
    }
    let (max_scale, amax_scale) = signed_absmax(&scales);
    if amax_scale < 1e-15 {
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(b, 208, 1.0 / iscale);
    for (j, &s) in scales.iter().enumerate() {
        b[192 + j] = nearest_int(iscale * s).clamp(-128, 127) as i8 as u8;
    }
    let d = f16_at(b, 208);
    let mut l = [32u8; QK_K];
    for j in 0..16 {
        let dl = d * (b[192 + j] as i8) as f32;
        if dl == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / dl).clamp(-32, 31) + 32) as u8;
        }
    }
    for n in 0..2 {
        for i in 0..32 {
            let v = |t: usize| l[128 * n + 32 * t + i];
            b[64 * n + i] = (v(0) & 0x0F) | ((v(2) & 0x0F) << 4);
            b[64 * n + 32 + i] = (v(1) & 0x0F) | ((v(3) & 0x0F) << 4);
            b[128 + 32 * n + i] =
                (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
        }
    }
}

/// Q8_K as `quantize_row_q8_K_ref`: `iscale = -127 / max` (max: the signed value of largest
/// magnitude), `q = min(127, nearest_int(iscale x))`, `d = 1 / iscale` stored as f32, and the
/// sums of each 16 quants.
pub(super) fn quant_q8_k(x: &[f32], b: &mut [u8]) {
    b.fill(0);
    let (max, amax) = signed_absmax(x);
    if amax == 0.0 {
        return;
    }
    let iscale = -127.0 / max;
    for (j, &v) in x.iter().enumerate() {
        b[4 + j] = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    for j in 0..16 {
        let s: i32 = (0..16).map(|i| b[4 + 16 * j + i] as i8 as i32).sum();
        b[260 + 2 * j..262 + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
    }
    b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

/// Rounds an f32 through f16, as a value stored in a block's f16 field reads back.
#[inline]
pub(super) fn via_f16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}
