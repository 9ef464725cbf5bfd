//! MLX affine 4-bit matrices rewritten, without loss, as GGUF Q4_1 blocks.
//!
//! Why: the affine format (`ops::quantize`: `w = scale q + bias` per group of 32, 64 or 128
//! values, 4-bit codes) and Q4_1 (`w = d q + m` per block of 32, `d` and `m` in f16) are the
//! same arithmetic on the same codes. Q4_1 has the integer kernels (activations quantized to
//! int8, `vpdpbusd` on 8 interleaved rows: `quant::interleave_for_cpu`), which stream weights at
//! about twice the rate of the affine kernel, whose f32 arithmetic bounds it. A group of 64
//! becomes two blocks with the same `d` and `m` (5 bits per value as Q4_1, where the checkpoint
//! takes 4.5), which [`super::interleave_shared_for_cpu_in`] then stores once per group
//! ([`super::GgmlType::Q4_1x8s2`], and `Q4_1x8s4` for groups of 128): back to the checkpoint's
//! size.
//!
//! Lossless or nothing: the rewrite is refused (`None`) unless every scale and bias is exactly
//! an f16 (true of f16 checkpoints, and of bf16 ones whose values lie in f16's normal range, as
//! trained weights' do), so the weights the kernels see are the checkpoint's. What differs is
//! the product's arithmetic: the Q4_1 kernels quantize the activations to 8 bits per 32 values
//! (as every GGUF matrix is multiplied), the affine kernel keeps them in f32.

use crate::array::Array;
use crate::backend::cpu::copy::SendPtr;
use crate::backend::cpu::pool::parallel_chunks;
use crate::backend::cpu::quant::interleave::{ROWS, affine8_codes_at, affine8_d_at};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops;
use crate::quant::GgmlType;
use half::f16;

/// Values per Q4_1 block.
const BLOCK: usize = 32;
/// Bytes per Q4_1 block: `d`, `m` (f16) and 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;

/// The affine matrix (`packed` u32 `(out, in * bits / 32)`, `scales` and `biases`
/// `(out, in / group_size)`, as `ops::quantized_matmul` takes them) as Q4_1 rows: a `u8` array
/// `(out, in / 32 * 20)` that `ops::gguf_matmul(x, rows, GgmlType::Q4_1)` multiplies to the
/// same weights. `None` when it cannot be exact: `bits != 4`, a group size that is not a
/// multiple of 32, or a scale or bias that f16 does not hold exactly. Errors on inconsistent
/// shapes. Evaluates the inputs.
pub fn affine_as_q4_1(
    packed: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: u32,
) -> Result<Option<Array>> {
    if bits != 4 || group_size == 0 || !group_size.is_multiple_of(BLOCK) {
        return Ok(None);
    }
    let (rows, words, groups) =
        check_shapes("affine_as_q4_1", packed, scales, biases, group_size, bits)?;
    let k = words * 8; // 8 four-bit values per u32
    let Some((d, m)) = exact_fields(scales, biases)? else {
        return Ok(None);
    };
    let codes = Codes::of(packed)?;
    let codes = codes.words();
    let row_bytes = k / BLOCK * BLOCK_BYTES;
    let mut out = vec![0u8; rows * row_bytes];
    let per_group = group_size / BLOCK;
    let dst = SendPtr(out.as_mut_ptr());
    // Rows are independent; about 3 ns a value on one thread, so a 7B model's would add
    // seconds to its load without both cores.
    let min_rows = (1usize << 16).div_ceil(k).max(1);
    parallel_chunks(rows, min_rows, &|r0, r1| {
        // SAFETY: rows r0..r1 of `out` (row_bytes each) are this chunk's alone.
        let mine = unsafe {
            std::slice::from_raw_parts_mut(dst.get().add(r0 * row_bytes), (r1 - r0) * row_bytes)
        };
        for (r, row) in (r0..r1).zip(mine.chunks_exact_mut(row_bytes)) {
            let src = &codes[r * words..(r + 1) * words];
            for (b, block) in row.chunks_exact_mut(BLOCK_BYTES).enumerate() {
                let g = r * groups + b / per_group;
                block[0..2].copy_from_slice(&d[g].to_le_bytes());
                block[2..4].copy_from_slice(&m[g].to_le_bytes());
                // The block's 32 codes: 4 words, value j of the stream at bits 4j, so byte i
                // of the stream holds values 2i (low nibble) and 2i + 1 (high).
                let mut v = [0u8; BLOCK];
                for (w, word) in src[b * 4..b * 4 + 4].iter().enumerate() {
                    for (i, byte) in word.to_le_bytes().into_iter().enumerate() {
                        v[8 * w + 2 * i] = byte & 0xF;
                        v[8 * w + 2 * i + 1] = byte >> 4;
                    }
                }
                // Q4_1 byte j holds value j in its low nibble and value j + 16 in its high one.
                for (j, byte) in block[4..].iter_mut().enumerate() {
                    *byte = v[j] | (v[j + 16] << 4);
                }
            }
        }
    });
    Ok(Some(Array::from_vec(out, &[rows, row_bytes])?))
}

/// An MLX 8-bit affine matrix (as [`affine_as_q4_1`] takes it, `bits = 8`) in the interleaved
/// layout the VNNI decode kernels read, cut from `arena`: [`GgmlType::A8x8`], `A8x8s2` or
/// `A8x8s4` for groups of 32, 64 or 128 (records of 8 rows: the group's 8 `d` then 8 `m` in f16,
/// then per 32-value block 8 chunks of 32 bytes, chunk `c` holding bytes `4c..4c + 4` of each
/// row's codes), 8.5 to 8.25 bits per value as in the checkpoint. The codes are unsigned bytes,
/// which `vpdpbusd` takes as they are, and `m` is applied as Q4_1's minimum is; prefill-sized
/// products decode the records straight to bf16 for the AMX tiles where there are some.
///
/// `None` (the affine kernels serve) without `vpdpbusd` (AVX-512 VNNI or AVX-VNNI: AVX2's byte
/// products would saturate on codes above 127), with `TESSERA_REPACK=0`, for other widths or
/// group sizes, a row count that is not a multiple of 8, or a scale or bias that f16 does not
/// hold exactly. Errors on inconsistent shapes. Evaluates the inputs.
pub fn affine8_for_cpu_in(
    packed: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: u32,
    arena: &crate::memory::Arena,
) -> Result<Option<(Array, GgmlType)>> {
    use crate::backend::cpu::quant::Isa;
    let layout = match group_size {
        32 => GgmlType::A8x8,
        64 => GgmlType::A8x8s2,
        128 => GgmlType::A8x8s4,
        _ => return Ok(None),
    };
    let repack = super::cpu_layout(GgmlType::Q8_0) != GgmlType::Q8_0;
    if bits != 8 || !Isa::best().has_vpdpbusd() || !repack {
        return Ok(None);
    }
    let (rows, words, groups) =
        check_shapes("affine8_for_cpu_in", packed, scales, biases, group_size, 8)?;
    if !rows.is_multiple_of(ROWS) {
        return Ok(None);
    }
    let Some((d, m)) = exact_fields(scales, biases)? else {
        return Ok(None);
    };
    let codes = Codes::of(packed)?;
    let codes = codes.words();
    let k = words * 4;
    let row_bytes = layout.row_bytes(k)?;
    let out = crate::layout::ArrayData::alloc_in(Dtype::U8, &[rows, row_bytes], arena)?;
    let dst = SendPtr(out.mut_ptr::<u8>());
    let record = layout.type_size() * ROWS;
    let blocks = group_size / BLOCK;
    parallel_chunks(rows / ROWS, 1, &|g0, g1| {
        for g in g0..g1 {
            for r in 0..groups {
                // SAFETY: group g's records are this chunk's alone and inside `out`.
                let rec = unsafe {
                    std::slice::from_raw_parts_mut(dst.get().add((g * groups + r) * record), record)
                };
                for j in 0..ROWS {
                    let row = g * ROWS + j;
                    let at = row * groups + r;
                    let h = affine8_d_at(j);
                    rec[h..h + 2].copy_from_slice(&d[at].to_le_bytes());
                    rec[16 + h..16 + h + 2].copy_from_slice(&m[at].to_le_bytes());
                    // The group's codes: one byte per value, 4 to a word.
                    let src = &codes[row * words + r * group_size / 4..][..group_size / 4];
                    for s in 0..blocks {
                        for c in 0..8 {
                            let o = affine8_codes_at(s, c, j);
                            rec[o..o + 4].copy_from_slice(&src[8 * s + c].to_le_bytes());
                        }
                    }
                }
            }
        }
    });
    Ok(Some((Array::from_data(out), layout)))
}

/// Checks the affine matrix's arrays and returns (rows, packed words per row, groups per row).
fn check_shapes(
    op: &'static str,
    packed: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: u32,
) -> Result<(usize, usize, usize)> {
    let bad = |msg: String| Error::Invalid { op, msg };
    if packed.dtype() != Dtype::U32 || packed.ndim() != 2 {
        return Err(bad(format!(
            "packed must be a u32 matrix, got {} of shape {:?}",
            packed.dtype(),
            packed.shape()
        )));
    }
    let (rows, words) = (packed.shape()[0], packed.shape()[1]);
    let k = words * 32 / bits as usize;
    if !k.is_multiple_of(group_size) {
        return Err(bad(format!(
            "rows of {k} values are not whole groups of {group_size}"
        )));
    }
    let groups = k / group_size;
    for (name, a) in [("scales", scales), ("biases", biases)] {
        if a.shape() != [rows, groups] || !a.dtype().is_float() {
            return Err(bad(format!(
                "{name} must be a float ({rows}, {groups}) matrix for {rows} rows of {k} \
                 values in groups of {group_size}, got {} of shape {:?}",
                a.dtype(),
                a.shape()
            )));
        }
    }
    Ok((rows, words, groups))
}

/// The f16 bits of the scales and of the biases, or `None` when one value is not exactly an f16.
fn exact_fields(scales: &Array, biases: &Array) -> Result<Option<(Vec<u16>, Vec<u16>)>> {
    let Some(d) = exact_f16(scales)? else {
        return Ok(None);
    };
    Ok(exact_f16(biases)?.map(|m| (d, m)))
}

/// The packed codes, read in place (a mapped checkpoint is not copied) once contiguous.
struct Codes {
    data: crate::layout::ArrayData,
    len: usize,
}

impl Codes {
    fn of(packed: &Array) -> Result<Codes> {
        packed.eval()?;
        let data = crate::backend::cpu::copy::ensure_contiguous(&packed.data()?)?;
        Ok(Codes {
            data,
            len: packed.size(),
        })
    }

    fn words(&self) -> &[u32] {
        // SAFETY: a contiguous u32 array of `len` elements from its pointer, alive as long as
        // `data` (checked to be u32 by `check_shapes`).
        unsafe { std::slice::from_raw_parts(self.data.ptr::<u32>(), self.len) }
    }
}

/// The f16 bits of every value of `a`, or `None` when one of them is not exactly an f16 (or
/// is NaN).
fn exact_f16(a: &Array) -> Result<Option<Vec<u16>>> {
    let v = ops::astype(a, Dtype::F32)?.to_vec::<f32>()?;
    let mut bits = Vec::with_capacity(v.len());
    for x in v {
        let h = f16::from_f32(x);
        if h.to_f32() != x {
            return Ok(None);
        }
        bits.push(h.to_bits());
    }
    Ok(Some(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `(rows, k)` matrix of smooth, distinct values.
    fn matrix(rows: usize, k: usize) -> Array {
        let v: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0 + (i % 7) as f32 / 16.0)
            .collect();
        Array::from_vec(v, &[rows, k]).unwrap()
    }

    #[test]
    fn q4_1_rows_dequantize_to_the_affine_weights_and_multiply_alike() {
        for group in [32, 64, 128] {
            let (rows, k) = (16, 256);
            let w = ops::astype(&matrix(rows, k), Dtype::F16).unwrap();
            let (q, s, b) = ops::quantize(&w, group, 4).unwrap();
            let q41 = affine_as_q4_1(&q, &s, &b, group, 4).unwrap().unwrap();
            assert_eq!(q41.shape(), &[rows, k / 32 * 20]);
            // The affine reference in f32 (with f16 scales it would round to f16).
            let f32_of = |a: &Array| ops::astype(a, Dtype::F32).unwrap();
            let want = ops::dequantize(&q, &f32_of(&s), &f32_of(&b), group, 4)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let got = ops::gguf_dequantize(&q41, GgmlType::Q4_1, k)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            // Both compute `scale q + bias` from the same f16 fields in f32.
            assert_eq!(got, want, "group {group}");
            // The products differ only by the activations' 8-bit quantization.
            let x = matrix(3, k);
            let affine = ops::quantized_matmul(&x, &q, &s, &b, true, group, 4)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let interleaved = crate::quant::interleave_for_cpu(&q41, GgmlType::Q4_1).unwrap();
            let (w, format) = interleaved.unwrap_or((q41, GgmlType::Q4_1));
            let gguf = ops::gguf_matmul(&x, &w, format)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let scale = affine.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (i, (a, g)) in affine.iter().zip(&gguf).enumerate() {
                assert!(
                    (a - g).abs() <= 0.01 * scale,
                    "group {group} [{i}]: {a} vs {g}"
                );
            }
        }
    }

    #[test]
    fn eight_bit_layouts_hold_the_affine_weights_and_multiply_alike() {
        use crate::backend::cpu::quant::Isa;
        let arena = crate::memory::Arena::new();
        for (group, want) in [
            (32, GgmlType::A8x8),
            (64, GgmlType::A8x8s2),
            (128, GgmlType::A8x8s4),
        ] {
            let (rows, k) = (16, 384);
            let w = ops::astype(&matrix(rows, k), Dtype::F16).unwrap();
            let (q, s, b) = ops::quantize(&w, group, 8).unwrap();
            let laid = affine8_for_cpu_in(&q, &s, &b, group, 8, &arena).unwrap();
            let vnni = Isa::best().has_vpdpbusd()
                && crate::quant::cpu_layout(GgmlType::Q8_0) != GgmlType::Q8_0;
            assert_eq!(
                laid.is_some(),
                vnni,
                "made exactly where a VNNI kernel runs"
            );
            let Some((a8, layout)) = laid else {
                continue;
            };
            assert_eq!(layout, want);
            assert_eq!(a8.shape(), &[rows, k / group * layout.type_size()]);
            let f32_of = |a: &Array| ops::astype(a, Dtype::F32).unwrap();
            let want_w = ops::dequantize(&q, &f32_of(&s), &f32_of(&b), group, 8)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let got = ops::gguf_dequantize(&a8, layout, k)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            assert_eq!(got, want_w, "group {group}: the weights");
            let ids = Array::from_vec(vec![3u32, 15, 8], &[3]).unwrap();
            let rows_got = ops::gguf_take_rows(&a8, &ids, layout, k)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            for (i, id) in [3usize, 15, 8].into_iter().enumerate() {
                assert_eq!(&rows_got[i * k..(i + 1) * k], &want_w[id * k..(id + 1) * k]);
            }
            // Decode-sized and prefill-sized products (the latter in tiles of 4 rows).
            for m in [1, 3, 6, 70, 100] {
                let x = matrix(m, k);
                let affine = ops::quantized_matmul(&x, &q, &s, &b, true, group, 8)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap();
                let ours = ops::gguf_matmul(&x, &a8, layout)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap();
                let scale = affine.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (i, (a, g)) in affine.iter().zip(&ours).enumerate() {
                    assert!(
                        (a - g).abs() <= 0.01 * scale,
                        "group {group} m={m} [{i}]: {a} vs {g}"
                    );
                }
                // Where the tiles run: the f64 product of the bf16-rounded weights and
                // activations, closely.
                if m >= crate::backend::cpu::quant::amx_min_m(layout)
                    && crate::backend::cpu::amx::supported()
                {
                    let xs = x.to_vec::<f32>().unwrap();
                    let reference =
                        crate::backend::cpu::amx::bf16_reference(&xs, &want_w, m, rows, k);
                    for i in 0..m {
                        for r in 0..rows {
                            let (want, mag) = reference[i * rows + r];
                            let got = ours[i * rows + r] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * mag,
                                "group {group} AMX [{i}][{r}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        // f32 scales are refused, not rounded.
        let (q, s, b) = ops::quantize(&matrix(8, 64), 64, 8).unwrap();
        assert!(
            affine8_for_cpu_in(&q, &s, &b, 64, 8, &arena)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_what_f16_cannot_hold_and_other_widths() {
        let w = matrix(8, 64);
        // f32 scales of arbitrary values are not f16 values.
        let (q, s, b) = ops::quantize(&w, 64, 4).unwrap();
        assert!(affine_as_q4_1(&q, &s, &b, 64, 4).unwrap().is_none());
        let (q, s, b) = ops::quantize(&ops::astype(&w, Dtype::F16).unwrap(), 64, 8).unwrap();
        assert!(affine_as_q4_1(&q, &s, &b, 64, 8).unwrap().is_none());
        // Inconsistent shapes are errors, not silent refusals.
        let (q, s, b) = ops::quantize(&ops::astype(&w, Dtype::F16).unwrap(), 32, 4).unwrap();
        assert!(affine_as_q4_1(&q, &s, &b, 64, 4).is_err());
    }
}
