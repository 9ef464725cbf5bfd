//! Quantized weight formats.
//!
//! A quantized matrix stays quantized in memory: a `u8` array of shape `[rows, row_bytes]` holding
//! the raw blocks of one format, exactly as they lie in a GGUF file (so a memory-mapped file is
//! used in place). [`GgmlType`] names the GGUF/ggml block formats and their geometry; the kernels
//! that decode them and multiply with them are in `backend::cpu::quant`.
//!
//! Twelve formats exist only in memory: the MLX affine layouts [`GgmlType::Q4_1x8s2`],
//! [`GgmlType::Q4_1x8s4`] and [`GgmlType::A8x8`] (with `A8x8s2`, `A8x8s4`; below), and
//! [`GgmlType::Q4_0x8`], [`GgmlType::Q4_1x8`],
//! [`GgmlType::Q5_0x8`], [`GgmlType::Q8_0x8`], [`GgmlType::Q4_Kx8`], [`GgmlType::Q5_Kx8`] and
//! [`GgmlType::Q6_Kx8`], Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K and Q6_K blocks of 8 rows interleaved so that the CPU's decode
//! kernel multiplies 8 rows at once with no horizontal sums (up to twice the speed of the
//! natural layout). [`interleave_for_cpu`] converts a loaded
//! matrix when the CPU kernels prefer it; these layouts have no GGUF id and are never written
//! to a file.
//!
//! [`affine_as_q4_1`] rewrites an MLX 4-bit affine matrix as Q4_1 blocks when that is exact, so
//! MLX checkpoints get the same integer kernels; [`interleave_shared_for_cpu_in`] then stores
//! each affine group's header once ([`GgmlType::Q4_1x8s2`], [`GgmlType::Q4_1x8s4`]).
//! [`affine8_for_cpu_in`] lays an 8-bit affine matrix out as [`GgmlType::A8x8`] (no file format
//! holds `d q + m` with 8-bit codes, so that layout is made straight from the checkpoint and
//! read only by the VNNI decode kernel and, for prefill, the AMX path).

mod from_affine;

pub use from_affine::{affine_as_q4_1, affine8_for_cpu_in};

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};

/// The ggml tensor types, with the numeric ids GGUF files store.
///
/// Block geometry (`block_size` values per `type_size` bytes) follows ggml's definitions; the
/// `K` formats group 256 values in a super-block with per-sub-block scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    /// Q4_0 with 8 rows interleaved (in memory only; see the module docs and
    /// `backend::cpu::quant::interleave` for the layout).
    Q4_0x8,
    /// Q4_1 with 8 rows interleaved (in memory only, as [`GgmlType::Q4_0x8`]).
    Q4_1x8,
    /// Q5_0 with 8 rows interleaved (in memory only, as [`GgmlType::Q4_0x8`]; the fifth bits
    /// are stored as byte masks).
    Q5_0x8,
    /// Q8_0 with 8 rows interleaved (in memory only, as [`GgmlType::Q4_0x8`]).
    Q8_0x8,
    /// Q4_K with 8 rows interleaved (in memory only, as [`GgmlType::Q4_0x8`]; one record per
    /// super-block of 256 values).
    Q4_Kx8,
    /// Q5_K with 8 rows interleaved (in memory only, as [`GgmlType::Q4_Kx8`]).
    Q5_Kx8,
    /// Q6_K with 8 rows interleaved (in memory only, as [`GgmlType::Q4_Kx8`]).
    Q6_Kx8,
    /// [`GgmlType::Q4_1x8`] where each pair of consecutive blocks of a row has the same `d`
    /// and `m`, stored once per pair (in memory only: MLX affine groups of 64, see
    /// [`affine_as_q4_1`]): 4.5 bits per value instead of 5.
    Q4_1x8s2,
    /// As [`GgmlType::Q4_1x8s2`], one `d` and `m` per 4 blocks (affine groups of 128).
    Q4_1x8s4,
    /// MLX 8-bit affine groups of 32 (`w = d q + m`, `q` an unsigned byte) in records of 8
    /// interleaved rows as Q8_0x8's, with `m` beside `d` (in memory only, made by
    /// [`affine8_for_cpu_in`]; no file format holds it, so only the VNNI decode kernel reads it).
    A8x8,
    /// [`GgmlType::A8x8`] for groups of 64: one header per 2 blocks.
    A8x8s2,
    /// [`GgmlType::A8x8`] for groups of 128: one header per 4 blocks.
    A8x8s4,
}

/// `(type, id, name, block_size, type_size)` for every type, in id order (the in-memory layouts,
/// which have no id, last).
const TABLE: &[(GgmlType, Option<u32>, &str, usize, usize)] = &[
    (GgmlType::F32, Some(0), "F32", 1, 4),
    (GgmlType::F16, Some(1), "F16", 1, 2),
    (GgmlType::Q4_0, Some(2), "Q4_0", 32, 18),
    (GgmlType::Q4_1, Some(3), "Q4_1", 32, 20),
    (GgmlType::Q5_0, Some(6), "Q5_0", 32, 22),
    (GgmlType::Q5_1, Some(7), "Q5_1", 32, 24),
    (GgmlType::Q8_0, Some(8), "Q8_0", 32, 34),
    (GgmlType::Q8_1, Some(9), "Q8_1", 32, 36),
    (GgmlType::Q2_K, Some(10), "Q2_K", 256, 84),
    (GgmlType::Q3_K, Some(11), "Q3_K", 256, 110),
    (GgmlType::Q4_K, Some(12), "Q4_K", 256, 144),
    (GgmlType::Q5_K, Some(13), "Q5_K", 256, 176),
    (GgmlType::Q6_K, Some(14), "Q6_K", 256, 210),
    (GgmlType::Q8_K, Some(15), "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, Some(16), "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, Some(17), "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, Some(18), "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, Some(19), "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, Some(20), "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, Some(21), "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, Some(22), "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, Some(23), "IQ4_XS", 256, 136),
    (GgmlType::I8, Some(24), "I8", 1, 1),
    (GgmlType::I16, Some(25), "I16", 1, 2),
    (GgmlType::I32, Some(26), "I32", 1, 4),
    (GgmlType::I64, Some(27), "I64", 1, 8),
    (GgmlType::F64, Some(28), "F64", 1, 8),
    (GgmlType::IQ1_M, Some(29), "IQ1_M", 256, 56),
    (GgmlType::BF16, Some(30), "BF16", 1, 2),
    (GgmlType::TQ1_0, Some(34), "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, Some(35), "TQ2_0", 256, 66),
    (GgmlType::Q4_0x8, None, "Q4_0x8", 32, 18),
    (GgmlType::Q4_1x8, None, "Q4_1x8", 32, 20),
    (GgmlType::Q5_0x8, None, "Q5_0x8", 32, 22),
    (GgmlType::Q8_0x8, None, "Q8_0x8", 32, 34),
    (GgmlType::Q4_Kx8, None, "Q4_Kx8", 256, 144),
    (GgmlType::Q5_Kx8, None, "Q5_Kx8", 256, 176),
    (GgmlType::Q6_Kx8, None, "Q6_Kx8", 256, 210),
    (GgmlType::Q4_1x8s2, None, "Q4_1x8s2", 64, 36),
    (GgmlType::Q4_1x8s4, None, "Q4_1x8s4", 128, 68),
    (GgmlType::A8x8, None, "A8x8", 32, 36),
    (GgmlType::A8x8s2, None, "A8x8s2", 64, 68),
    (GgmlType::A8x8s4, None, "A8x8s4", 128, 132),
];

/// `(file format, in-memory layout)`: the formats the CPU kernels read interleaved, 8 rows at a
/// time (see `backend::cpu::quant::interleave`).
pub(crate) const INTERLEAVED: [(GgmlType, GgmlType); 7] = [
    (GgmlType::Q4_0, GgmlType::Q4_0x8),
    (GgmlType::Q4_1, GgmlType::Q4_1x8),
    (GgmlType::Q5_0, GgmlType::Q5_0x8),
    (GgmlType::Q8_0, GgmlType::Q8_0x8),
    (GgmlType::Q4_K, GgmlType::Q4_Kx8),
    (GgmlType::Q5_K, GgmlType::Q5_Kx8),
    (GgmlType::Q6_K, GgmlType::Q6_Kx8),
];

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, Option<u32>, &'static str, usize, usize) {
        // The table lists every variant, so the search always succeeds.
        TABLE.iter().find(|e| e.0 == self).unwrap_or(&TABLE[0])
    }

    /// The type for a GGUF type id; an unknown id is an error naming it.
    pub fn from_id(id: u32) -> Result<GgmlType> {
        TABLE
            .iter()
            .find(|e| e.1 == Some(id))
            .map(|e| e.0)
            .ok_or_else(|| Error::Invalid {
                op: "gguf",
                msg: format!("unknown ggml tensor type id {id}"),
            })
    }

    /// The type for a name such as `"Q4_K"` (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|e| e.2.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    /// The id GGUF files store; `None` for the in-memory layouts, which files never hold.
    pub fn id(self) -> Option<u32> {
        self.entry().1
    }

    /// Weight rows whose blocks are interleaved: 8 for the in-memory layouts
    /// ([`GgmlType::Q4_0x8`] and the other `x8` types), else 1. A matrix in such a layout has a
    /// multiple of this many rows, and single rows cannot be sliced out.
    pub fn interleaved_rows(self) -> usize {
        if self.file_format() != self || self.is_affine8() {
            8
        } else {
            1
        }
    }

    /// The 8-bit affine layouts ([`GgmlType::A8x8`] and its shared-header forms), which have no
    /// file format to de-interleave to.
    pub fn is_affine8(self) -> bool {
        matches!(self, GgmlType::A8x8 | GgmlType::A8x8s2 | GgmlType::A8x8s4)
    }

    /// The file format whose blocks an in-memory layout holds (the type itself for file formats).
    pub fn file_format(self) -> GgmlType {
        if matches!(self, GgmlType::Q4_1x8s2 | GgmlType::Q4_1x8s4) {
            return GgmlType::Q4_1;
        }
        INTERLEAVED
            .iter()
            .find(|&&(_, layout)| layout == self)
            .map_or(self, |&(file, _)| file)
    }

    /// Consecutive blocks of a row that share one header in this layout: 2 for
    /// [`GgmlType::Q4_1x8s2`], 4 for [`GgmlType::Q4_1x8s4`], else 1.
    pub fn shared_blocks(self) -> usize {
        match self {
            GgmlType::Q4_1x8s2 | GgmlType::A8x8s2 => 2,
            GgmlType::Q4_1x8s4 | GgmlType::A8x8s4 => 4,
            _ => 1,
        }
    }

    /// ggml's name, e.g. `"Q4_K"`.
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        self.entry().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().4
    }

    /// True for the block-quantized formats (everything but the plain float/int types).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by a row of `n` values, or an error when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return Err(Error::Invalid {
                op: "quant",
                msg: format!(
                    "a row of {n} values is not a whole number of {} blocks ({bs} values each)",
                    self.name()
                ),
            });
        }
        (n / bs)
            .checked_mul(self.type_size())
            .ok_or_else(|| Error::Invalid {
                op: "quant",
                msg: format!("a row of {n} {} values overflows", self.name()),
            })
    }

    /// Bits per value, e.g. 4.5 for Q4_0.
    pub fn bits_per_value(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }
}

/// `w` (`n` rows of `format` blocks: a `u8` matrix `(n, row_bytes)`, as `gguf_matmul` takes
/// it) in the layout this CPU's kernels multiply fastest, and that layout's format; `None` when
/// the natural layout is already the best: formats other than Q4_0, Q4_1, Q5_0, Q8_0, Q4_K,
/// Q5_K and Q6_K, a row count that is not a multiple of 8, a CPU without AVX2 (or
/// `TESSERA_SIMD=scalar`), `TESSERA_REPACK=0` (to
/// compare the layouts, as llama.cpp's `--no-repack`), or a copy that would not fit
/// [`crate::memory::fits_in_budget`].
///
/// Evaluates `w` and copies its bytes once: the result owns its memory, and results of
/// `gguf_matmul` with it equal those with `w` (the same integer arithmetic, rows in another
/// order). Only for matrices that are multiplied: an interleaved matrix cannot give single rows,
/// so keep an embedding table (or a tied output matrix that is one) natural.
pub fn interleave_for_cpu(w: &Array, format: GgmlType) -> Result<Option<(Array, GgmlType)>> {
    interleave_into(w, format, cpu_layout(format), None)
}

/// [`interleave_for_cpu`] with the result cut from `arena` (a model's weights, packed in load
/// order: see [`crate::memory::Arena`]).
pub fn interleave_for_cpu_in(
    w: &Array,
    format: GgmlType,
    arena: &crate::memory::Arena,
) -> Result<Option<(Array, GgmlType)>> {
    interleave_into(w, format, cpu_layout(format), Some(arena))
}

/// Q4_1 rows `w` in which every run of `share` consecutive blocks (2 or 4) carries one `d` and
/// `m` (what [`affine_as_q4_1`] makes of groups of 64 or 128) as [`GgmlType::Q4_1x8s2`] or
/// [`GgmlType::Q4_1x8s4`], each header stored once: 4.5 or 4.25 bits per value where Q4_1x8
/// takes 5. `None` where [`interleave_for_cpu_in`] would give `None` for Q4_1, for another
/// `share`, or when some block's header differs from its run's first.
pub fn interleave_shared_for_cpu_in(
    w: &Array,
    share: usize,
    arena: &crate::memory::Arena,
) -> Result<Option<(Array, GgmlType)>> {
    let layout = match share {
        2 => GgmlType::Q4_1x8s2,
        4 => GgmlType::Q4_1x8s4,
        _ => return Ok(None),
    };
    if cpu_layout(GgmlType::Q4_1) == GgmlType::Q4_1 {
        return Ok(None);
    }
    interleave_into(w, GgmlType::Q4_1, layout, Some(arena))
}

fn interleave_into(
    w: &Array,
    format: GgmlType,
    layout: GgmlType,
    arena: Option<&crate::memory::Arena>,
) -> Result<Option<(Array, GgmlType)>> {
    if layout == format {
        return Ok(None);
    }
    let rows = layout.interleaved_rows();
    if w.dtype() != Dtype::U8 || w.ndim() != 2 || !w.shape()[0].is_multiple_of(rows) {
        return Ok(None);
    }
    let row_bytes = w.shape()[1];
    if !crate::memory::fits_in_budget(w.nbytes()) {
        // The copy would crowd out the computation: the natural layout serves, from wherever
        // it lies (a memory-mapped file).
        return Ok(None);
    }
    if !row_bytes.is_multiple_of(format.type_size()) {
        return Err(Error::Invalid {
            op: "interleave_for_cpu",
            msg: format!(
                "rows of {row_bytes} bytes are not whole {format} blocks of {} bytes",
                format.type_size()
            ),
        });
    }
    let nb = row_bytes / format.type_size();
    if !nb.is_multiple_of(layout.shared_blocks()) {
        return Ok(None);
    }
    let data = crate::backend::cpu::copy::ensure_contiguous(&w.data()?)?;
    let len = w.size();
    // SAFETY: a contiguous u8 array covers `size` bytes from its pointer.
    let src = unsafe { std::slice::from_raw_parts(data.ptr::<u8>(), len) };
    // A shared-header layout's rows are shorter than the file format's.
    let shape = [
        w.shape()[0],
        nb / layout.shared_blocks() * layout.type_size(),
    ];
    let out = match arena {
        Some(arena) => crate::layout::ArrayData::alloc_in(Dtype::U8, &shape, arena)?,
        None => crate::layout::ArrayData::alloc(Dtype::U8, &shape)?,
    };
    // SAFETY: a fresh contiguous buffer of `shape`'s bytes that nothing else references yet.
    let dst = unsafe { std::slice::from_raw_parts_mut(out.mut_ptr::<u8>(), shape[0] * shape[1]) };
    if !crate::backend::cpu::quant::interleave::interleave_as(layout, src, nb, dst) {
        return Ok(None);
    }
    Ok(Some((Array::from_data(out), layout)))
}

/// The layout [`interleave_for_cpu`] turns matrices of `format` into on this CPU, before its
/// per-matrix conditions (row count, memory budget): the `x8` layout of Q4_0, Q4_1, Q5_0, Q8_0,
/// Q4_K, Q5_K and Q6_K ([`GgmlType::Q4_0x8`] and so on) where the SIMD kernels run and
/// `TESSERA_REPACK` is not `0`; `format` itself otherwise.
pub fn cpu_layout(format: GgmlType) -> GgmlType {
    use crate::backend::cpu::quant::Isa;
    let off = std::env::var("TESSERA_REPACK").is_ok_and(|v| v == "0");
    if Isa::best() == Isa::Scalar || off {
        return format;
    }
    INTERLEAVED
        .iter()
        .find(|&&(file, _)| file == format)
        .map_or(format, |&(_, layout)| layout)
}

/// Quantizes the rows of `x` (a float array `(..., k)`) to blocks of the file format `format`,
/// as GGUF files store weights: a `u8` array `(..., format.row_bytes(k))`. Formats: Q4_0, Q4_1,
/// Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL (ggml's reference quantizers, or
/// simple round-to-nearest ones for the K-quants and IQ4_NL, see the CPU quant module), and
/// F32, F16, BF16. Evaluates `x`.
pub fn quantize_rows(x: &Array, format: GgmlType) -> Result<Array> {
    let op = "quantize_rows";
    if x.ndim() == 0 || !x.dtype().is_float() {
        return Err(Error::Invalid {
            op,
            msg: format!(
                "x must be a float array of at least one dimension, got {} of shape {:?}",
                x.dtype(),
                x.shape()
            ),
        });
    }
    if format.id().is_none() {
        return Err(Error::Invalid {
            op,
            msg: format!(
                "{format} is an in-memory layout; quantize to {}",
                format.file_format()
            ),
        });
    }
    let k = x.shape()[x.ndim() - 1];
    let row_bytes = format.row_bytes(k)?;
    let values = x.to_vec::<f32>()?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = row_bytes;
    let out = crate::layout::ArrayData::alloc(Dtype::U8, &shape)?;
    let rows = values.len().checked_div(k).unwrap_or(0);
    let dst = crate::backend::cpu::copy::SendPtr(out.mut_ptr::<u8>());
    crate::backend::cpu::pool::try_parallel_chunks(rows, 64, &|r0, r1| {
        // SAFETY: rows r0..r1 of the fresh output (rows * row_bytes bytes) belong to this chunk
        // alone.
        let d = unsafe {
            std::slice::from_raw_parts_mut(dst.get().add(r0 * row_bytes), (r1 - r0) * row_bytes)
        };
        let src = &values[r0 * k..r1 * k];
        for (s, d) in src.chunks_exact(k).zip(d.chunks_exact_mut(row_bytes)) {
            crate::backend::cpu::quant::quantize_row(format, s, d)?;
        }
        Ok(())
    })?;
    Ok(Array::from_data(out))
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_geometry() {
        for e in TABLE {
            if let Some(id) = e.1 {
                assert_eq!(GgmlType::from_id(id).unwrap(), e.0);
            }
            assert_eq!(GgmlType::from_name(e.2), Some(e.0));
        }
        assert_eq!(GgmlType::Q4_0x8.id(), None);
        assert_eq!(GgmlType::Q4_0x8.file_format(), GgmlType::Q4_0);
        assert_eq!(GgmlType::Q4_0x8.row_bytes(64).unwrap(), 36);
        assert_eq!(GgmlType::Q4_1x8.id(), None);
        assert_eq!(GgmlType::Q4_1x8.file_format(), GgmlType::Q4_1);
        assert_eq!(GgmlType::Q4_1x8.row_bytes(64).unwrap(), 40);
        assert_eq!(GgmlType::Q4_1x8.interleaved_rows(), 8);
        assert_eq!(GgmlType::Q4_1.interleaved_rows(), 1);
        assert_eq!(GgmlType::Q8_0x8.file_format(), GgmlType::Q8_0);
        assert_eq!(GgmlType::Q8_0x8.row_bytes(64).unwrap(), 68);
        assert_eq!(GgmlType::Q5_0x8.file_format(), GgmlType::Q5_0);
        assert_eq!(GgmlType::Q5_0x8.row_bytes(64).unwrap(), 44);
        assert_eq!(GgmlType::Q4_Kx8.file_format(), GgmlType::Q4_K);
        assert_eq!(GgmlType::Q4_Kx8.row_bytes(512).unwrap(), 288);
        assert_eq!(GgmlType::Q4_Kx8.interleaved_rows(), 8);
        assert_eq!(GgmlType::Q5_Kx8.file_format(), GgmlType::Q5_K);
        assert_eq!(GgmlType::Q5_Kx8.row_bytes(512).unwrap(), 352);
        assert_eq!(GgmlType::Q6_Kx8.file_format(), GgmlType::Q6_K);
        assert_eq!(GgmlType::Q6_Kx8.row_bytes(512).unwrap(), 420);
        assert!(GgmlType::from_id(4).is_err()); // removed Q4_2
        assert_eq!(GgmlType::Q4_K.row_bytes(512).unwrap(), 288);
        assert!(GgmlType::Q4_K.row_bytes(100).is_err());
        assert_eq!(GgmlType::Q4_0.bits_per_value(), 4.5);
    }
}
