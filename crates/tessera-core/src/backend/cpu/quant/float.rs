//! `matmul_t` for plain float weights (F32, F16, BF16 rows as GGUF stores them): each weight
//! row is widened to f32 once and dotted with every activation row. A convenience so a GGUF
//! model can send every tensor through one entry point; large dense layers are better served by
//! the dense matmul.

use super::dequantize_row_unchecked;
use crate::backend::cpu::pool::parallel_chunks;
use crate::backend::cpu::simd;
use crate::quant::GgmlType;

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: workers write disjoint columns of the output.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, so closures capture the `Sync` wrapper rather than the raw pointer field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Lengths validated by the caller.
pub(super) fn matmul_t(
    ty: GgmlType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let rb = k * ty.type_size();
    let outp = OutPtr(out.as_mut_ptr());
    let min_chunk = (1usize << 16).div_ceil((k * m).max(1));
    parallel_chunks(n, min_chunk, &|r0, r1| {
        let mut buf = vec![0f32; k];
        for r in r0..r1 {
            dequantize_row_unchecked(ty, &w[r * rb..(r + 1) * rb], &mut buf);
            for i in 0..m {
                let v = simd::dispatch(|| dot(&x[i * k..(i + 1) * k], &buf));
                // SAFETY: i < m, r < n; this chunk alone writes column r.
                unsafe { *outp.get().add(i * n + r) = v };
            }
        }
    });
}

/// Sixteen independent partial sums so the loop vectorises (and pipelines) at any width.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for j in 0..16 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}
