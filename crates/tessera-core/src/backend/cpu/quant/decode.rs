//! Weight blocks decoded to the integer form the dot products use (portable versions; the x86
//! decoders in `x86/` produce the same numbers in registers).
//!
//! - 32-value blocks: 32 small integers `q` plus `(d, m)` with `x = d q + m`. Symmetric formats
//!   give signed `q` and `m = 0`; Q4_1/Q5_1 give unsigned `q` and their min.
//! - 256-value super-blocks: 256 unsigned `q` (at most 6 bits, so `u8 * i8` pair sums fit i16),
//!   a signed integer scale `sc[j]` and min multiplier `mi[j]` per 16 values, and two floats:
//!   `x = d sc[j] q + dm mi[j]`. Per format: Q2_K `mi = min, dm = -dmin`; Q3_K `q = q3 + 4`,
//!   `mi = sc, dm = -4 d`; Q4_K/Q5_K (scales per 32, repeated) `mi = min, dm = -dmin`; Q6_K
//!   `q = q6 + 32`, `mi = sc, dm = -32 d`. The offset of Q3_K/Q6_K is folded into the min term so
//!   every format shares one kernel: `dot = dx (d Σ_j sc_j Σ q x + dm Σ_j mi_j bsum_j)`.

use super::kquants::{QK_K, unpack_scale_min_k4, unpack_scales_q3k};
use super::legacy::{IQ4NL_VALUES, f16_at, u32_at};

/// A 32-value block format.
pub(super) trait Block32 {
    /// Bytes per block.
    const BYTES: usize;
    /// `q` is the raw unsigned value and `x = d q + m` (Q4_1, Q5_1).
    const AFFINE: bool = false;
    /// Fills the signed (or, for affine formats, unsigned) values; returns `(d, m)`.
    fn decode(b: &[u8], q: &mut [i8; 32]) -> (f32, f32);
}

/// A 256-value super-block format.
pub(super) trait Block256 {
    const BYTES: usize;
    /// Values per distinct scale: 16, or 32 for Q4_K/Q5_K (whose `sc` and `mi` repeat each
    /// scale for the two halves of a 32-value sub-block).
    const SUB: usize = 16;
    /// For Q3_K (4) and Q6_K (32), whose min term is an offset of the values (`mi = sc`,
    /// `dm = -OFF d`, i.e. `x = d sc (q - OFF)`); 0 for the others.
    const OFF: i32 = 0;
    fn decode(b: &[u8], s: &mut SuperBlock);
}

/// A decoded super-block (see the module docs).
pub(super) struct SuperBlock {
    pub q: [u8; QK_K],
    pub sc: [i8; 16],
    pub mi: [i16; 16],
    pub d: f32,
    pub dm: f32,
}

impl SuperBlock {
    pub(super) fn new() -> SuperBlock {
        SuperBlock {
            q: [0; QK_K],
            sc: [0; 16],
            mi: [0; 16],
            d: 0.0,
            dm: 0.0,
        }
    }
}

macro_rules! marker {
    ($($name:ident),*) => {$(
        #[allow(non_camel_case_types)]
        pub(super) struct $name;
    )*};
}
marker!(
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
);

fn nibbles(qs: &[u8], q: &mut [i8; 32], sub: i8) {
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) as i8 - sub;
        q[j + 16] = (qs[j] >> 4) as i8 - sub;
    }
}

fn nibbles5(qs: &[u8], qh: u32, q: &mut [i8; 32], sub: i8) {
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        q[j] = ((qs[j] & 0x0F) | (h0 << 4)) as i8 - sub;
        q[j + 16] = ((qs[j] >> 4) | (h1 << 4)) as i8 - sub;
    }
}

impl Block32 for Q4_0 {
    const BYTES: usize = 18;
    fn decode(b: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
        nibbles(&b[2..18], q, 8);
        (f16_at(b, 0), 0.0)
    }
}

impl Block32 for Q4_1 {
    const BYTES: usize = 20;
    const AFFINE: bool = true;
    fn decode(b: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
        nibbles(&b[4..20], q, 0);
        (f16_at(b, 0), f16_at(b, 2))
    }
}

impl Block32 for Q5_0 {
    const BYTES: usize = 22;
    fn decode(b: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
        nibbles5(&b[6..22], u32_at(b, 2), q, 16);
        (f16_at(b, 0), 0.0)
    }
}

impl Block32 for Q5_1 {
    const BYTES: usize = 24;
    const AFFINE: bool = true;
    fn decode(b: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
        nibbles5(&b[8..24], u32_at(b, 4), q, 0);
        (f16_at(b, 0), f16_at(b, 2))
    }
}

impl Block32 for Q8_0 {
    const BYTES: usize = 34;
    fn decode(b: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
        for (o, &v) in q.iter_mut().zip(&b[2..34]) {
            *o = v as i8;
        }
        (f16_at(b, 0), 0.0)
    }
}

impl Block32 for Q8_1 {
    const BYTES: usize = 36;
    fn decode(b: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
        for (o, &v) in q.iter_mut().zip(&b[4..36]) {
            *o = v as i8;
        }
        (f16_at(b, 0), 0.0)
    }
}

impl Block32 for IQ4_NL {
    const BYTES: usize = 18;
    fn decode(b: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
        for j in 0..16 {
            q[j] = IQ4NL_VALUES[(b[2 + j] & 0x0F) as usize];
            q[j + 16] = IQ4NL_VALUES[(b[2 + j] >> 4) as usize];
        }
        (f16_at(b, 0), 0.0)
    }
}

/// 2-bit field of value `v` in a Q2_K/Q3_K `qs` array.
#[inline]
fn two_bits(qs: &[u8], v: usize) -> u8 {
    (qs[32 * (v / 128) + v % 32] >> (2 * ((v / 32) % 4))) & 3
}

impl Block256 for Q2_K {
    const BYTES: usize = 84;
    fn decode(b: &[u8], s: &mut SuperBlock) {
        for v in 0..QK_K {
            s.q[v] = two_bits(&b[16..80], v);
        }
        for ((sc, mi), &byte) in s.sc.iter_mut().zip(&mut s.mi).zip(&b[..16]) {
            *sc = (byte & 0x0F) as i8;
            *mi = (byte >> 4) as i16;
        }
        s.d = f16_at(b, 80);
        s.dm = -f16_at(b, 82);
    }
}

impl Block256 for Q3_K {
    const BYTES: usize = 110;
    const OFF: i32 = 4;
    fn decode(b: &[u8], s: &mut SuperBlock) {
        for v in 0..QK_K {
            let h = (b[v % 32] >> (v / 32)) & 1;
            s.q[v] = two_bits(&b[32..96], v) | (h << 2);
        }
        let sc = unpack_scales_q3k(&b[96..108]);
        for ((o, mi), &v) in s.sc.iter_mut().zip(&mut s.mi).zip(&sc) {
            *o = v as i8 - 32;
            *mi = *o as i16;
        }
        s.d = f16_at(b, 108);
        s.dm = -4.0 * s.d;
    }
}

/// Q4_K/Q5_K scales and mins, each repeated for the two 16-value halves of its sub-block.
fn scales_k4(b: &[u8], s: &mut SuperBlock) {
    let (sc, mn) = unpack_scale_min_k4(&b[4..16]);
    for j in 0..16 {
        s.sc[j] = ((sc >> (8 * (j / 2))) & 0xFF) as i8;
        s.mi[j] = ((mn >> (8 * (j / 2))) & 0xFF) as i16;
    }
    s.d = f16_at(b, 0);
    s.dm = -f16_at(b, 2);
}

impl Block256 for Q4_K {
    const BYTES: usize = 144;
    const SUB: usize = 32;
    fn decode(b: &[u8], s: &mut SuperBlock) {
        for v in 0..QK_K {
            let byte = b[16 + 32 * (v / 64) + v % 32];
            s.q[v] = if (v / 32) % 2 == 0 {
                byte & 0x0F
            } else {
                byte >> 4
            };
        }
        scales_k4(b, s);
    }
}

impl Block256 for Q5_K {
    const BYTES: usize = 176;
    const SUB: usize = 32;
    fn decode(b: &[u8], s: &mut SuperBlock) {
        for v in 0..QK_K {
            let byte = b[48 + 32 * (v / 64) + v % 32];
            let lo = if (v / 32) % 2 == 0 {
                byte & 0x0F
            } else {
                byte >> 4
            };
            let h = (b[16 + v % 32] >> (v / 32)) & 1;
            s.q[v] = lo | (h << 4);
        }
        scales_k4(b, s);
    }
}

impl Block256 for Q6_K {
    const BYTES: usize = 210;
    const OFF: i32 = 32;
    fn decode(b: &[u8], s: &mut SuperBlock) {
        for v in 0..QK_K {
            let (n, t, l) = (v / 128, (v / 32) % 4, v % 32);
            let lb = b[64 * n + l + 32 * (t % 2)];
            let lo = if t < 2 { lb & 0x0F } else { lb >> 4 };
            let hi = (b[128 + 32 * n + l] >> (2 * t)) & 3;
            s.q[v] = lo | (hi << 4);
        }
        for j in 0..16 {
            s.sc[j] = b[192 + j] as i8;
            s.mi[j] = s.sc[j] as i16;
        }
        s.d = f16_at(b, 208);
        s.dm = -32.0 * s.d;
    }
}
