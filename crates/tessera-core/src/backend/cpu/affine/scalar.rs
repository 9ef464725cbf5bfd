//! Portable kernels: the fallback on CPUs without AVX2 and the oracle the SIMD kernels are
//! tested against.

use super::format::{Format, read_pack};
use super::kernels::DotArgs;

/// `out[j] = scale * q + bias` for one row segment (`out.len()` values, whole groups).
/// Multiply then add (no fused multiply-add), so f32 results equal MLX's dequantization.
pub(super) fn decode_row(fmt: Format, row: &[u8], scales: &[f32], biases: &[f32], out: &mut [f32]) {
    let (bits, mask) = (fmt.bits, fmt.mask());
    let packs_per_group = fmt.group_size / 8;
    for (p, vals) in out.chunks_exact_mut(8).enumerate() {
        let g = p / packs_per_group;
        let (s, b) = (scales[g], biases[g]);
        let u = read_pack(row, p * bits as usize, bits);
        for (i, v) in vals.iter_mut().enumerate() {
            let q = ((u >> (i as u32 * bits)) & mask) as f32;
            *v = s * q + b;
        }
    }
}

/// The fused product for `a.mt` activation rows (see [`DotArgs`]).
///
/// # Safety
/// The pointers in `a` cover the sizes it states.
pub(super) unsafe fn dot(a: &DotArgs) {
    let fmt = a.fmt;
    let (gs, ng, bits, mask) = (fmt.group_size, a.k / fmt.group_size, fmt.bits, fmt.mask());
    let row_bytes = fmt.row_bytes(a.k);
    let mut q = [0f32; 128];
    for r in 0..a.rows {
        let w = std::slice::from_raw_parts(a.w.add(r * row_bytes), row_bytes);
        let (sc, bi) = (a.scales.add(r * ng), a.biases.add(r * ng));
        let mut acc = [0f32; super::kernels::MT];
        for g in a.g0..a.g1 {
            for (p, vals) in q[..gs].chunks_exact_mut(8).enumerate() {
                let u = read_pack(w, (g * gs / 8 + p) * bits as usize, bits);
                for (i, v) in vals.iter_mut().enumerate() {
                    *v = ((u >> (i as u32 * bits)) & mask) as f32;
                }
            }
            for (i, acc) in acc.iter_mut().enumerate().take(a.mt) {
                let x = std::slice::from_raw_parts(a.x.add(i * a.k + g * gs), gs);
                let d: f32 = x.iter().zip(&q[..gs]).map(|(x, q)| x * q).sum();
                *acc += *sc.add(g) * d + *bi.add(g) * *a.xsum.add(i * ng + g);
            }
        }
        for (i, acc) in acc.iter().enumerate().take(a.mt) {
            *a.out.add(i * a.ldo + r) += *acc;
        }
    }
}
