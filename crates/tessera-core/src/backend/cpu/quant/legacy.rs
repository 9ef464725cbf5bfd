//! The 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, IQ4_NL): scalar reference
//! dequantization and quantization with ggml's exact float semantics.
//!
//! Every function takes one block (`src.len() == type_size`) and 32 values; the caller has
//! validated the lengths. Dequantization evaluates the same float expressions in the same order
//! as ggml's `dequantize_row_*` (no fused multiply-add), so results are bit-equal to ggml and to
//! gguf-py. Quantization follows ggml's `quantize_row_*_ref` (what `llama-quantize` writes
//! without an importance matrix).

use half::f16;

/// Values per block.
pub(super) const QK: usize = 32;

/// The IQ4_NL code book: a non-uniform 4-bit grid (ggml's `kvalues_iq4nl`).
pub(super) const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[inline]
pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[inline]
pub(super) fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

#[inline]
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Q4_0 `{d: f16, qs: [u8; 16]}`: `x[j] = d * (nibble - 8)`; value `j < 16` is the low nibble of
/// `qs[j]`, value `j + 16` its high nibble.
pub(super) fn dequant_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1 `{d: f16, m: f16, qs: [u8; 16]}`: `x = d * nibble + m`.
pub(super) fn dequant_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// Q5_0 `{d: f16, qh: u32, qs: [u8; 16]}`: 5-bit `q = nibble | (bit j of qh) << 4`, `x = d (q - 16)`.
pub(super) fn dequant_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32_at(b, 2);
    for j in 0..16 {
        let q = b[6 + j];
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((q & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// Q5_1 `{d: f16, m: f16, qh: u32, qs: [u8; 16]}`: `x = d q + m`, q as in Q5_0.
pub(super) fn dequant_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32_at(b, 4);
    for j in 0..16 {
        let q = b[8 + j];
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((q & 0x0F) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// Q8_0 `{d: f16, qs: [i8; 32]}`: `x = d q`.
pub(super) fn dequant_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..QK {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// Q8_1 `{d: f16, s: f16, qs: [i8; 32]}` (`s = d * sum(qs)`, used by dot products only).
pub(super) fn dequant_q8_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..QK {
        y[j] = (b[4 + j] as i8) as f32 * d;
    }
}

/// IQ4_NL `{d: f16, qs: [u8; 16]}`: `x = d * IQ4NL_VALUES[nibble]`, nibbles ordered as Q4_0.
pub(super) fn dequant_iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * IQ4NL_VALUES[(q & 0x0F) as usize] as f32;
        y[j + 16] = d * IQ4NL_VALUES[(q >> 4) as usize] as f32;
    }
}

/// The value with the largest magnitude (the first one on ties), and that magnitude.
#[inline]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// C's `(int8_t)(v)` followed by `MIN(hi, .)`: truncation toward zero.
#[inline]
fn trunc_clamp(v: f32, hi: i32) -> u8 {
    ((v as i8) as i32).min(hi) as u8
}

pub(super) fn quant_q4_0(x: &[f32], b: &mut [u8]) {
    let (max, _) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(b, 0, d);
    for j in 0..16 {
        let lo = trunc_clamp(x[j] * id + 8.5, 15);
        let hi = trunc_clamp(x[j + 16] * id + 8.5, 15);
        b[2 + j] = lo | (hi << 4);
    }
}

pub(super) fn quant_q4_1(x: &[f32], b: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    for j in 0..16 {
        let lo = trunc_clamp((x[j] - min) * id + 0.5, 15);
        let hi = trunc_clamp((x[j + 16] - min) * id + 0.5, 15);
        b[4 + j] = lo | (hi << 4);
    }
}

pub(super) fn quant_q5_0(x: &[f32], b: &mut [u8]) {
    let (max, _) = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(b, 0, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let lo = trunc_clamp(x[j] * id + 16.5, 31);
        let hi = trunc_clamp(x[j + 16] * id + 16.5, 31);
        b[6 + j] = (lo & 0x0F) | ((hi & 0x0F) << 4);
        qh |= ((lo as u32 & 0x10) >> 4) << j;
        qh |= ((hi as u32 & 0x10) >> 4) << (j + 16);
    }
    b[2..6].copy_from_slice(&qh.to_le_bytes());
}

pub(super) fn quant_q5_1(x: &[f32], b: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    let mut qh = 0u32;
    for j in 0..16 {
        // ggml casts straight to uint8_t here (no clamp); `as u8` saturates the same in range.
        let lo = ((x[j] - min) * id + 0.5) as u8;
        let hi = ((x[j + 16] - min) * id + 0.5) as u8;
        b[8 + j] = (lo & 0x0F) | ((hi & 0x0F) << 4);
        qh |= ((lo as u32 & 0x10) >> 4) << j;
        qh |= ((hi as u32 & 0x10) >> 4) << (j + 16);
    }
    b[4..8].copy_from_slice(&qh.to_le_bytes());
}

/// Q8_0 as `quantize_row_q8_0_ref`: `d = amax / 127`, `q = roundf(x / d)` (ties away from zero).
pub(super) fn quant_q8_0(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(b, 0, d);
    for j in 0..QK {
        b[2 + j] = (x[j] * id).round() as i8 as u8;
    }
}

/// Q8_1 as `quantize_row_q8_1_ref`: Q8_0's rounding plus `s = f16(sum(q) * d)` with the f32 `d`.
pub(super) fn quant_q8_1(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(b, 0, d);
    let mut sum = 0i32;
    for j in 0..QK {
        let q = (x[j] * id).round() as i8;
        sum += q as i32;
        b[4 + j] = q as u8;
    }
    put_f16(b, 2, sum as f32 * d);
}

/// IQ4_NL by nearest code-book entry with a max-magnitude scale (no search over scales, unlike
/// ggml's imatrix-aware quantizer; the blocks decode the same way).
pub(super) fn quant_iq4_nl(x: &[f32], b: &mut [u8]) {
    let (max, amax) = signed_absmax(x);
    // Map the largest-magnitude value onto the code book end of the same sign.
    let d = if amax == 0.0 {
        0.0
    } else if max < 0.0 {
        max / IQ4NL_VALUES[0] as f32
    } else {
        max / IQ4NL_VALUES[15] as f32
    };
    put_f16(b, 0, d);
    let d = f16::from_f32(d).to_f32();
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let nearest = |v: f32| -> u8 {
        let t = v * id;
        let mut best = 0usize;
        for (i, &k) in IQ4NL_VALUES.iter().enumerate() {
            if (k as f32 - t).abs() < (IQ4NL_VALUES[best] as f32 - t).abs() {
                best = i;
            }
        }
        best as u8
    };
    for j in 0..16 {
        b[2 + j] = nearest(x[j]) | (nearest(x[j + 16]) << 4);
    }
}
