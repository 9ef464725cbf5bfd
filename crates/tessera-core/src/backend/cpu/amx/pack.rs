//! Operand layouts for the tile kernel: rows rounded to bf16, and the pair-packed layout of the
//! second operand.

use std::arch::x86_64::*;

/// A cache line: the unit of the tile buffers, so that every tile row is one aligned line (a
/// tile load or store whose rows straddle lines touches twice as many).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct Line(pub [u8; 64]);

/// A zeroed, line-aligned buffer of at least `bytes` bytes.
pub(crate) fn lines(bytes: usize) -> Vec<Line> {
    vec![Line([0; 64]); bytes.div_ceil(64)]
}

/// A line-aligned scratch buffer kept by its thread between calls: a fresh allocation of this
/// size comes as untouched pages, and the kernel's page faults and zeroing cost as much as the
/// packing itself (9% of a 2048 bf16 GEMM). Buffers above [`KEEP_BYTES`] are freed after use.
pub(crate) struct Scratch(std::cell::RefCell<Vec<Line>>);

/// Largest scratch buffer kept for reuse.
const KEEP_BYTES: usize = 64 << 20;

impl Scratch {
    pub(crate) const fn new() -> Scratch {
        Scratch(std::cell::RefCell::new(Vec::new()))
    }

    /// Runs `f` on at least `bytes` bytes of this buffer, whose contents are whatever an
    /// earlier use left (callers write before they read).
    ///
    /// # Panics
    /// If `f` uses the same buffer again (each role has its own).
    pub(crate) fn with<R>(&self, bytes: usize, f: impl FnOnce(&mut [Line]) -> R) -> R {
        let mut buf = self.0.borrow_mut();
        let len = bytes.div_ceil(64);
        if buf.len() < len {
            *buf = lines(bytes);
        }
        let r = f(&mut buf[..len]);
        if buf.len() * 64 > KEEP_BYTES {
            *buf = Vec::new();
        }
        r
    }
}

/// The buffer as `T` values (`T` a plain number type).
pub(crate) fn as_mut<T: Copy>(b: &mut [Line]) -> &mut [T] {
    let len = std::mem::size_of_val(b) / std::mem::size_of::<T>();
    // SAFETY: a Line is 64 initialised bytes, aligned for any number type; every bit pattern
    // is a valid number.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast(), len) }
}

/// Rounds `src` to bf16 (nearest even) into `dst`, zero-filling `dst` past `src.len()`.
///
/// # Safety
/// AVX-512 F and BF16 are present; `dst.len() >= src.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(crate) unsafe fn bf16_row(src: &[f32], dst: &mut [u16]) {
    let n = src.len();
    let mut i = 0;
    while i + 32 <= n {
        let lo = _mm512_loadu_ps(src.as_ptr().add(i));
        let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), v);
        i += 32;
    }
    for j in i..n {
        dst[j] = half::bf16::from_f32(src[j]).to_bits();
    }
    dst[n..].fill(0);
}

/// `dst[p][j] = rows[j][p]` as u32 pairs, for 16 rows of `kp` bf16 values: 16 gathers of one
/// pair from each row per pair-row.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_pairs(rows: &[u16], kp: usize, dst: *mut u8) {
    let pairs = kp / 2;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(pairs as i32),
    );
    let src = rows.as_ptr().cast::<i32>();
    for p in 0..pairs {
        let v = _mm512_i32gather_epi32::<4>(idx, src.add(p));
        _mm512_storeu_si512(dst.add(p * 64).cast(), v);
    }
}
