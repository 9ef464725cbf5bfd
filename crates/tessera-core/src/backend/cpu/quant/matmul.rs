//! The `matmul_t` driver: quantizes the activations once, picks the kernel for the weight type
//! and instruction set, and walks the output in tiles.
//!
//! Work split: output columns (weight rows) are divided into contiguous chunks, one per pool
//! thread, so each thread streams its own part of the weights. With few activation rows
//! (`m < panel_min_m`) the decode kernels run: inside a chunk, when there are more activation
//! rows than one tile holds (`MT`), weight rows are taken in groups small enough to stay in L2
//! and every activation tile is run over the group before moving on, so the weights are read
//! from memory once and decoded once per tile of `MT` rows (interleaved layouts up to
//! [`INTERLEAVED_DECODE_M`] rows). From `panel_min_m` rows on, each
//! chunk (whole panels of [`PANEL_ROWS`]) goes to a panel kernel in one call, which repacks
//! the weights a group at a time and runs all activation rows over them (`x86/panel.rs`); with
//! fewer panels than threads the activation rows are split instead.

use super::act::{KExtras, Q8KRows, Q8Rows, quantize_q8, quantize_q8k};
use super::interleave::{self, ROWS};
use super::{Isa, scalar};
use crate::backend::cpu::pool::{self, parallel_chunks};
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// Activation rows per tile: each decoded weight block is used against this many rows. (8 was
/// measured slower: the per-row accumulators no longer fit in registers.)
pub(super) const MT: usize = 4;

/// From this many activation rows on, the x86 instruction sets use the panel kernels
/// (`x86/panel.rs`: weights repacked once per call, then an integer GEMM), below it the decode
/// kernels (each weight block decoded once per tile of [`MT`] rows). Measured crossover: at
/// `m = 4` both run about equally fast, from 5 (VNNI) or 6 (AVX2) rows the panels win.
fn panel_min_m(isa: Isa) -> usize {
    if isa == Isa::Vnni { 5 } else { 6 }
}

/// Below this many activation rows the interleaved layouts run the decode kernels (tiles of
/// [`MT`] rows over weight groups kept in L2, `drive`) rather than the panel kernels, whose
/// de-interleaving and repacking of every weight costs about what 100 rows of decode tiles do
/// (the panel crossover above was measured on natural layouts). Measured, prefill tokens/s of
/// the 0.5B-shape Q4_0, panels -> decode kernels: AVX-512 VNNI 5 tokens 50 -> 298, 16 143 ->
/// 442, 32 240 -> 467, 63 357 -> 489; at 96 the decode kernels 514 against the panels 477
/// (AMX 539), at 128 519 against 542 (AMX 645). AVX2 16 tokens 121-124 -> 326-333, 48 257 ->
/// 360-368, 95 335 -> 359-363; AVX-VNNI 16 135-138 -> 263-421, 95 403 -> 472-477. SmolLM2 Q4_1
/// and Gemma 3 Q4_K with AVX2 at 32 and 95 tokens: 1.0-1.7x.
pub(super) const INTERLEAVED_DECODE_M: usize = 96;

/// Bytes of weight rows kept hot while all activation tiles pass over them.
const L2_GROUP_BYTES: usize = 256 * 1024;

/// One kernel call: weight rows `r0..r1` against activation rows `i0..i0 + mt` (`mt <= MT`),
/// writing `out[i * ldo + r]`.
pub(super) struct Tile<'a, A> {
    pub w: &'a [u8],
    pub row_bytes: usize,
    /// Blocks per row.
    pub nb: usize,
    pub r0: usize,
    pub r1: usize,
    pub i0: usize,
    pub mt: usize,
    pub acts: &'a A,
    pub out: *mut f32,
    pub ldo: usize,
}

impl<A> Tile<'_, A> {
    /// Writes the result for activation row `i0 + i`, weight row `r`.
    ///
    /// # Safety
    /// `(i0 + i) * ldo + r` is inside the output, and no other thread writes that element.
    #[inline(always)]
    pub(super) unsafe fn put(&self, i: usize, r: usize, v: f32) {
        *self.out.add((self.i0 + i) * self.ldo + r) = v;
    }
}

/// A kernel for one (weight type, instruction set).
pub(super) type Kernel<A> = unsafe fn(&Tile<A>);

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: workers write disjoint columns of the output (see `drive`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, so closures capture the `Sync` wrapper rather than the raw pointer field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Work a thread runs on the output columns `r0..r1` it has just computed, before handing
/// back (a gated product's activation: the values are still in its cache). Ranges are whole
/// units of [`EPILOGUE_ROWS`].
pub(super) type Epilogue<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// The unit of an [`Epilogue`]'s ranges: a gated product's 8 gate rows and 8 up rows.
pub(super) const EPILOGUE_ROWS: usize = 2 * crate::ops::GATE_ROWS;

/// `out[m, n] = x[m, k] · W[n, k]ᵀ`; the caller validated every length. With `epi` (and `n` a
/// multiple of [`EPILOGUE_ROWS`]), the paths that can run it per thread do so; the result says
/// whether it ran (otherwise the caller runs it over all columns).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_t(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    epi: Option<&Epilogue>,
) -> Result<bool> {
    let row_bytes = ty.row_bytes(k)?;
    let panel = m >= panel_min_m(isa);
    if ty.interleaved_rows() > 1 {
        return Ok(matmul_interleaved(
            isa, ty, w, row_bytes, n, k, x, m, out, epi,
        ));
    }
    if panel && let Some((kern, off)) = panel_q8(isa, ty) {
        let acts = quantize_q8(isa, x, m, k, false, off);
        drive_panels(kern, &acts, w, row_bytes, acts.nb, n, k, m, out);
        return Ok(false);
    }
    if panel && let Some((kern, ex)) = panel_q8k(isa, ty) {
        let acts = quantize_q8k(isa, x, m, k, ex);
        drive_panels(kern, &acts, w, row_bytes, acts.nb, n, k, m, out);
        return Ok(false);
    }
    if let Some(kern) = kernel_q8(isa, ty) {
        let acts = quantize_q8(isa, x, m, k, true, 0);
        drive(kern, &acts, w, row_bytes, acts.nb, n, k, m, out, 1, None);
        return Ok(false);
    }
    if let Some(kern) = kernel_q8k(isa, ty) {
        let acts = quantize_q8k(isa, x, m, k, KExtras::default());
        drive(kern, &acts, w, row_bytes, acts.nb, n, k, m, out, 1, None);
        return Ok(false);
    }
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            super::float::matmul_t(ty, w, n, k, x, m, out);
            Ok(false)
        }
        _ => Err(Error::Invalid {
            op: "quant_matmul",
            msg: format!("no matmul kernel for {ty} weights"),
        }),
    }
}

/// The product on the AMX tiles (the caller checked `amx::supported()`): each block of 32
/// weight rows is de-interleaved if need be and decoded to bf16 (`x86/to_bf16.rs`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_amx(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let base = ty.file_format();
    let nb = k / base.block_size();
    // Natural rows (a shared-header layout's rows are shorter than its file format's).
    let natural_bytes = nb * base.type_size();
    let decode = |r0: usize, r1: usize, panel: &mut crate::backend::cpu::amx::gemm::Panel| {
        if ty.is_affine8() {
            // No natural rows: the records decode straight to bf16.
            // SAFETY: `amx::supported()` implies AVX-512 BF16; whole groups of 8 rows.
            unsafe { super::x86::to_bf16::decode_affine8(ty, w, k, r0 / ROWS, r1 / ROWS, panel) };
            return;
        }
        if ty.interleaved_rows() == 1 {
            let rows = &w[r0 * row_bytes..r1 * row_bytes];
            // SAFETY: `amx::supported()` implies AVX-512 BF16; whole rows, as many as the
            // panel was given.
            unsafe { super::x86::to_bf16::decode_rows(base, rows, natural_bytes, k, panel) };
            return;
        }
        // The panel's rows de-interleaved into this thread's buffer, kept between panels and
        // calls (every byte is written before it is read): a fresh zeroed one per panel (0.1-1
        // MB) cost its zeroing, and its page faults above the allocator's mmap threshold.
        NATURAL.with(|buf| {
            let mut buf = buf.borrow_mut();
            let len = (r1 - r0) * natural_bytes;
            if buf.len() < len {
                buf.resize(len, 0);
            }
            let rows = &mut buf[..len];
            interleave::deinterleave(ty, w, nb, r0 / ROWS, r1 / ROWS, rows);
            // SAFETY: as above.
            unsafe { super::x86::to_bf16::decode_rows(base, rows, natural_bytes, k, panel) };
        });
    };
    // SAFETY: the caller checked `amx::supported()` and the lengths (`matmul_t_on`).
    unsafe { crate::backend::cpu::amx::gemm::matmul_t(n, k, x, m, out, &decode) };
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Each pool thread's de-interleaved panel rows ([`matmul_amx`]).
    static NATURAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Weights in an interleaved layout (`Q4_0x8` and the like; `n` a multiple of 8, checked by the
/// op): the 8-row decode kernel for few activation rows on x86; otherwise (prefill, or the
/// portable kernels) the natural kernels of the file format, over slices of [`SLICE_GROUPS`]
/// groups de-interleaved into a per-thread buffer (one extra pass over the weights, small next
/// to a prefill's arithmetic). Runs `epi` per thread on the decode kernel's path (true), not
/// on the others (false).
#[allow(clippy::too_many_arguments)]
fn matmul_interleaved(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    epi: Option<&Epilogue>,
) -> bool {
    let base = ty.file_format();
    // The 8-bit affine layouts have no natural format: the decode kernel takes every row
    // count, tiles of `MT` activation rows over weight groups kept in L2 (`drive`).
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && (m < INTERLEAVED_DECODE_M || ty.is_affine8()) {
        if let Some(kern) = super::x86::kernel_x8k(isa, base) {
            // The K-quant kernel takes each sub-block's minimum against its 32-value sum.
            let ex = KExtras {
                off: 0,
                sums32: true,
            };
            let acts = quantize_q8k(isa, x, m, k, ex);
            drive(kern, &acts, w, row_bytes, acts.nb, n, k, m, out, ROWS, epi);
        } else {
            let kern = super::x86::kernel_x8(isa, ty);
            let acts = quantize_q8(isa, x, m, k, false, 0);
            drive(kern, &acts, w, row_bytes, acts.nb, n, k, m, out, ROWS, epi);
        }
        return epi.is_some();
    }
    let _ = epi;
    let dr = Deinterleaved {
        layout: ty,
        w,
        n,
        k,
        m,
    };
    if let Some((kern, off)) = panel_q8(isa, base) {
        let acts = quantize_q8(isa, x, m, k, false, off);
        dr.run(kern, &acts, m, out);
    } else if let Some((kern, ex)) = panel_q8k(isa, base) {
        let acts = quantize_q8k(isa, x, m, k, ex);
        dr.run(kern, &acts, m, out);
    } else if let Some(kern) = kernel_q8(isa, base) {
        let acts = quantize_q8(isa, x, m, k, true, 0);
        dr.run(kern, &acts, MT, out);
    } else if let Some(kern) = kernel_q8k(isa, base) {
        let acts = quantize_q8k(isa, x, m, k, KExtras::default());
        dr.run(kern, &acts, MT, out);
    }
    false
}

/// Groups of 8 rows de-interleaved at a time by [`Deinterleaved::run`] (256 rows: a slice
/// stays in L2 while the kernel runs over it).
const SLICE_GROUPS: usize = 32;

/// A matrix in an interleaved `layout` (`n` rows of `k` values) multiplied by `m` activation
/// rows through a natural-layout kernel of its file format.
#[derive(Clone, Copy)]
struct Deinterleaved<'a> {
    layout: GgmlType,
    w: &'a [u8],
    n: usize,
    k: usize,
    m: usize,
}

impl Deinterleaved<'_> {
    /// Runs `kern`: each pool thread takes whole groups, de-interleaves them a slice at a time
    /// and runs every activation tile (`step` rows per call: [`MT`] for a decode kernel, all
    /// `m` for a panel kernel) over the slice.
    fn run<A: Sync>(&self, kern: Kernel<A>, acts: &A, step: usize, out: &mut [f32]) {
        let Deinterleaved { layout, w, n, k, m } = *self;
        let base = layout.file_format();
        let nb = k / base.block_size();
        // The de-interleaved slices hold natural rows of the file format.
        let row_bytes = nb * base.type_size();
        let outp = OutPtr(out.as_mut_ptr());
        let min_groups = (1usize << 16).div_ceil(k * m.min(MT) * ROWS).max(1);
        parallel_chunks(n / ROWS, min_groups, &|g0, g1| {
            let mut buf = vec![0u8; SLICE_GROUPS.min(g1 - g0) * ROWS * row_bytes];
            let mut g = g0;
            while g < g1 {
                let ge = (g + SLICE_GROUPS).min(g1);
                let rows = (ge - g) * ROWS;
                let slice = &mut buf[..rows * row_bytes];
                interleave::deinterleave(layout, w, nb, g, ge, slice);
                let mut i0 = 0;
                while i0 < m {
                    let tile = Tile {
                        w: slice,
                        row_bytes,
                        nb,
                        r0: 0,
                        r1: rows,
                        i0,
                        mt: (m - i0).min(step),
                        acts,
                        // SAFETY: column g * 8 of an m x n output; the tile's columns 0..rows
                        // are the output's g * 8..ge * 8.
                        out: unsafe { outp.get().add(g * ROWS) },
                        ldo: n,
                    };
                    // SAFETY: the slice holds `rows` natural rows of `nb` blocks; this chunk
                    // alone writes output columns g0 * 8..g1 * 8; the kernel suits this CPU.
                    unsafe { kern(&tile) };
                    i0 += step;
                }
                g = ge;
            }
        });
    }
}

/// Prefill kernels for the 32-value formats, and the weight offset the activations' `bias`
/// must carry.
fn panel_q8(isa: Isa, ty: GgmlType) -> Option<(Kernel<Q8Rows>, i32)> {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return super::x86::panel_q8(isa, ty);
    }
    let _ = (isa, ty);
    None
}

/// Prefill kernels for the K-quants, and the sums they need from the activations.
fn panel_q8k(isa: Isa, ty: GgmlType) -> Option<(Kernel<Q8KRows>, KExtras)> {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return super::x86::panel_q8k(isa, ty);
    }
    let _ = (isa, ty);
    None
}

/// Kernels for the formats multiplied against Q8 (32-value) activations.
fn kernel_q8(isa: Isa, ty: GgmlType) -> Option<Kernel<Q8Rows>> {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return super::x86::kernel_q8(isa, ty);
    }
    let _ = isa;
    scalar::kernel_q8(ty)
}

/// Kernels for the K-quants, multiplied against Q8_K activations.
fn kernel_q8k(isa: Isa, ty: GgmlType) -> Option<Kernel<Q8KRows>> {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return super::x86::kernel_q8k(isa, ty);
    }
    let _ = isa;
    scalar::kernel_q8k(ty)
}

/// Runs a decode kernel over all `n` weight rows and `m` activation rows; threads split the
/// weight rows in whole units of `unit` rows (8 for the interleaved layout, which must divide
/// `n`; [`EPILOGUE_ROWS`] with an epilogue, which each thread runs on its rows at the end).
#[allow(clippy::too_many_arguments)]
fn drive<A: Sync>(
    kern: Kernel<A>,
    acts: &A,
    w: &[u8],
    row_bytes: usize,
    nb: usize,
    n: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
    unit: usize,
    epi: Option<&Epilogue>,
) {
    let unit = if epi.is_some() {
        unit.max(EPILOGUE_ROWS)
    } else {
        unit
    };
    let outp = OutPtr(out.as_mut_ptr());
    // Split only when each thread gets real work: about 64K multiply-adds per chunk at least.
    let per_row = k * m.min(MT);
    let min_chunk = (1usize << 16).div_ceil(per_row.max(1));
    let group = if m <= MT {
        usize::MAX
    } else {
        (L2_GROUP_BYTES / row_bytes.max(1))
            .max(4)
            .next_multiple_of(unit)
    };
    parallel_chunks(n / unit, min_chunk.div_ceil(unit), &|u0, u1| {
        let (r0, r1) = (u0 * unit, u1 * unit);
        let mut rs = r0;
        while rs < r1 {
            let re = rs.saturating_add(group).min(r1);
            let mut i0 = 0;
            while i0 < m {
                let tile = Tile {
                    w,
                    row_bytes,
                    nb,
                    r0: rs,
                    r1: re,
                    i0,
                    mt: (m - i0).min(MT),
                    acts,
                    out: outp.get(),
                    ldo: n,
                };
                // SAFETY: lengths were validated by the caller (w holds n rows of row_bytes,
                // acts hold m rows of nb blocks, out is m x n); this chunk alone writes
                // columns r0..r1; the kernel was chosen for an instruction set the CPU has.
                unsafe { kern(&tile) };
                i0 += MT;
            }
            rs = re;
        }
        if let Some(epi) = epi {
            epi(r0, r1);
        }
    });
}

/// Weight rows per split unit of the panel kernels (a multiple of every panel height).
const PANEL_ROWS: usize = 16;

/// Runs a panel kernel: each pool thread takes a contiguous range of weight rows (whole panels)
/// against all `m` activation rows.
#[allow(clippy::too_many_arguments)]
fn drive_panels<A: Sync>(
    kern: Kernel<A>,
    acts: &A,
    w: &[u8],
    row_bytes: usize,
    nb: usize,
    n: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
) {
    let outp = OutPtr(out.as_mut_ptr());
    let run = |r0: usize, r1: usize, i0: usize, i1: usize| {
        let tile = Tile {
            w,
            row_bytes,
            nb,
            r0,
            r1,
            i0,
            mt: i1 - i0,
            acts,
            out: outp.get(),
            ldo: n,
        };
        // SAFETY: as in `drive`; this call alone writes rows i0..i1 of columns r0..r1.
        unsafe { kern(&tile) };
    };
    // Split only when each thread gets real work (as `drive`).
    const MIN_WORK: usize = 1 << 17;
    let units = n.div_ceil(PANEL_ROWS);
    if units < pool::global().threads() {
        // Fewer panels than threads (a handful of weight rows): split the activation rows
        // instead, each thread packing the whole (small) weight matrix.
        let min_rows = MIN_WORK.div_ceil(n * k).max(8);
        parallel_chunks(m, min_rows, &|a, b| run(0, n, a, b));
        return;
    }
    let min_units = MIN_WORK.div_ceil(PANEL_ROWS * m * k);
    parallel_chunks(units, min_units, &|a, b| {
        run(a * PANEL_ROWS, (b * PANEL_ROWS).min(n), 0, m)
    });
}
