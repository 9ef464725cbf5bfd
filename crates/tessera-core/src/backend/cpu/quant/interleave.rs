//! The row-interleaved layouts [`GgmlType::Q4_0x8`], [`GgmlType::Q4_1x8`],
//! [`GgmlType::Q5_0x8`], [`GgmlType::Q8_0x8`], [`GgmlType::Q4_Kx8`], [`GgmlType::Q5_Kx8`] and
//! [`GgmlType::Q6_Kx8`]: the blocks of 8 consecutive weight rows stored together, so that one
//! 256-bit register holds 4 bytes of each of the 8 rows.
//!
//! Why: the natural layout puts a row's 32 values per block in one register, so every block's
//! integer dot product ends in lanes that must be summed horizontally, and the 18- to 34-byte
//! blocks make the 8 scales of a group a gather. With 8 rows in the 8 lanes of a register the
//! multiply-adds (`vpdpbusd`, 4 bytes per i32 lane) accumulate each row in its own lane, a
//! broadcast activation word meets all 8 rows, and the 8 scales (and Q4_1's 8 minimums) are one
//! 16-byte load each: the decode kernel (`x86/blocks32x8.rs`) runs about twice as fast as the
//! natural one.
//!
//! Layout: the matrix is `n / 8` groups; group `g` is `nb` records, one per block index `b`, at
//! `(g nb + b) R` with `R = 8 ×` the block size (144 bytes for Q4_0, 160 for Q4_1, 176 for
//! Q5_0, 272 for Q8_0):
//! - the block headers, one f16 field at a time: bytes `0..16` the scales `d` of rows `8g + j`,
//!   `j = 0..8`, at `2j`; for Q4_1 bytes `16..32` the minimums `m`, likewise;
//! - for Q5_0, bytes `16..48`: 8 little-endian 32-bit masks, one per nibble register below
//!   (`h = 0..4` the low nibbles of chunk `h`, `h = 4..8` the high nibbles of chunk `h - 4`),
//!   whose bit `4j + k` is the fifth bit of the value that byte `4j + k` of that register
//!   holds: the kernel adds 16 where a bit is set, with no unpacking of `qh`;
//! - then 4 chunks (Q8_0: 8) of 32 bytes, from byte `H = 16` (Q4_1: 32, Q5_0: 48); chunk `c`
//!   holds bytes `4c..4c + 4` of row `j`'s `qs` at `H + 32c + 4j` (for the 4-bit formats the
//!   low nibbles are values `4c..4c + 4` of the block, the high nibbles values
//!   `16 + 4c..16 + 4c + 4`; for Q8_0 the bytes are values `4c..4c + 4`).
//!
//! Q4_K (records of 1152 bytes, one per super-block of 256 values) fits the same scheme: its
//! header is `d` (bytes `0..16`) and `dmin` (`16..32`), and the rest of its block, the 12
//! bytes of packed 6-bit sub-block scales and minimums followed by the 128 bytes of `qs`, is
//! stored as 35 four-byte words: words 0..3 (bytes `32..128`) are the packed scales, so lane
//! `j` of a 256-bit load holds row `j`'s 4 bytes and the kernel unpacks the 8 rows' scales
//! with a few vector operations; chunk `c` of `qs` (bytes `128 + 32c..`) holds bytes
//! `4c..4c + 4` of each row's `qs`: values `64p + 4o..64p + 4o + 4` in the low nibbles
//! (sub-block `2p`) and `64p + 32 + 4o..` in the high ones (sub-block `2p + 1`), where
//! `p = c / 8`, `o = c % 8`. Q5_K (1408-byte records) is laid out the same way with its 32
//! bytes of `qh` as 8 more words after the scales (bytes `128..384`; `qs` from 384): word `o`
//! holds the fifth bits of the values whose nibbles chunk `8p + o` holds, bit `2p` for the low
//! nibbles, `2p + 1` for the high ones.
//!
//! [`GgmlType::Q4_1x8s2`] and [`GgmlType::Q4_1x8s4`] are Q4_1x8 whose records hold 2 or 4
//! consecutive blocks of the 8 rows under one header (bytes `0..32`: the first block's `d` and
//! `m`, which every block of the run must share), then each block's 4 chunks in turn (block
//! `s`'s from byte `32 + 128 s`): MLX affine groups of 64 or 128 values
//! (`quant::affine_as_q4_1`) at the checkpoint's 4.5 or 4.25 bits per value, where Q4_1x8 takes
//! 5. Their rows are shorter than Q4_1's, so [`deinterleave`] writes natural Q4_1 rows of the
//! file format's length.
//!
//! Q6_K (records of 1680 bytes) keeps its `d` last in the block; the record has the 8 rows'
//! `d` in bytes `0..16` and then the block's other 208 bytes as 52 words in the order the
//! kernel reads them (a record read out of order, jumping between its `ql`, `qh` and scales,
//! streamed from memory at a third of the speed): first the 16 signed 8-bit sub-block scales
//! (block words `48..52`), then for each half `n` of the super-block and word `w = 0..8` of
//! it the triple `ql` word `16n + w`, `ql` word `16n + 8 + w`, `qh` word `32 + 8n + w`, which
//! the kernel combines as ggml's `dequantize_row_q6_K` combines their bytes.

use crate::backend::cpu::copy::SendPtr;
use crate::backend::cpu::pool::parallel_chunks;
use crate::quant::GgmlType;

/// Rows per interleaved group.
pub(crate) const ROWS: usize = 8;

/// Geometry of one interleavable file format.
#[derive(Clone, Copy)]
struct Geometry {
    /// Bytes of f16 fields at the start of a block (2: `d`; 4: `d`, `m`), or at its end with
    /// `header_last`.
    header: usize,
    /// The f16 fields follow the words (Q6_K's `d`).
    header_last: bool,
    /// Q5_0: 4 bytes `qh` (the fifth bits) after `d`, stored as chunk masks in the record.
    qh: bool,
    /// Bytes of `qs` per block.
    qs: usize,
    /// Consecutive blocks per record, which share the first one's header (1, or for the
    /// `Q4_1x8s` layouts 2 or 4).
    share: usize,
}

impl Geometry {
    const fn of(format: GgmlType) -> Geometry {
        let (header, header_last, qh, qs) = match format {
            GgmlType::Q4_0 => (2, false, false, 16),
            GgmlType::Q4_1 => (4, false, false, 16),
            GgmlType::Q5_0 => (2, false, true, 16),
            GgmlType::Q8_0 => (2, false, false, 32),
            // `d`, `dmin`; the 12 bytes of packed 6-bit scales and minimums travel as the first
            // 3 words of `qs` (see the module docs).
            GgmlType::Q4_K => (4, false, false, 140),
            // As Q4_K, with the 32 bytes of fifth bits as words 3..11.
            GgmlType::Q5_K => (4, false, false, 172),
            // `ql`, `qh` and the 16 scales as words, `d` last in the block.
            GgmlType::Q6_K => (2, true, false, 208),
            _ => panic!("only Q4_0, Q4_1, Q5_0, Q8_0 and Q4_K to Q6_K have an interleaved layout"),
        };
        Geometry {
            header,
            header_last,
            qh,
            qs,
            share: 1,
        }
    }
    /// The geometry of an interleaved layout (`Q4_0x8`, ..., `Q4_1x8s2`).
    fn of_layout(layout: GgmlType) -> Geometry {
        Geometry {
            share: layout.shared_blocks(),
            ..Geometry::of(layout.file_format())
        }
    }
    /// Where a block's f16 fields start.
    fn fields_at(self) -> usize {
        if self.header_last { self.qs } else { 0 }
    }
    /// Where a block's words (`qs` and what travels with it) start.
    fn words_at(self) -> usize {
        if self.header_last {
            0
        } else {
            self.header + self.qh_bytes()
        }
    }
    fn block(self) -> usize {
        self.header + self.qh_bytes() + self.qs
    }
    const fn qh_bytes(self) -> usize {
        if self.qh { 4 } else { 0 }
    }
    /// Bytes per record: the 8 rows' header fields (and Q5_0's masks) once, then `share`
    /// blocks' chunks.
    fn record(self) -> usize {
        ROWS * (self.header + self.qh_bytes() + self.share * self.qs)
    }
    /// Bytes per group of 8 rows of `nb` blocks each.
    fn group_bytes(self, nb: usize) -> usize {
        nb / self.share * self.record()
    }
    /// The block word that record word `c` holds: the same word, except for Q6_K, whose record
    /// lists its words in the order its kernel reads them (see the module docs), so that a
    /// record is read front to back.
    fn source_word(self, c: usize) -> usize {
        if !self.header_last {
            return c;
        }
        if c < 4 {
            return 48 + c; // the scales
        }
        let (n, r) = ((c - 4) / 24, (c - 4) % 24);
        let w = r / 3;
        match r % 3 {
            0 => 16 * n + w,     // ql: low nibbles of values 128n + 4w.., high ones + 64
            1 => 16 * n + 8 + w, // ql: values 128n + 32 + 4w.., + 96
            _ => 32 + 8 * n + w, // qh: the top 2 bits of all four
        }
    }
    /// Where the record's `qs` chunks start.
    const fn qs_at(self) -> usize {
        8 * (self.header + self.qh_bytes())
    }
}

/// Bytes from the start of a record of `format` to its `qs` chunks, for the kernels.
pub(crate) const fn qs_at(format: GgmlType) -> usize {
    Geometry::of(format).qs_at()
}

/// Row `j`'s Q5_0 `qh` (its 32 fifth bits) gathered from a record's 8 chunk masks.
fn row_qh(rec: &[u8], j: usize) -> u32 {
    let mut qh = 0u32;
    for h in 0..8 {
        let at = 16 + 4 * h;
        let m = u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
        qh |= ((m >> (4 * j)) & 0xF) << qh_shift(h);
    }
    qh
}

/// The bits of `qh` that chunk mask `h` holds for one row: values `4h..4h + 4` for the low
/// nibbles (`h < 4`), `16 + 4(h - 4)..` for the high ones.
fn qh_shift(h: usize) -> usize {
    if h < 4 { 4 * h } else { 16 + 4 * (h - 4) }
}

/// Packs record `r` of the 8 rows (`rows[j]` is row `j`'s `nb` natural blocks): blocks
/// `r share..(r + 1) share`, with the first one's header.
fn pack(geo: Geometry, rows: &[&[u8]; ROWS], r: usize, rec: &mut [u8]) {
    let block = geo.block();
    let mut masks = [0u32; 8];
    for (j, row) in rows.iter().enumerate() {
        let first = &row[r * geo.share * block..][..block];
        for f in 0..geo.header / 2 {
            let (at, from) = (16 * f + 2 * j, geo.fields_at() + 2 * f);
            rec[at..at + 2].copy_from_slice(&first[from..from + 2]);
        }
        for s in 0..geo.share {
            let blk = &row[(r * geo.share + s) * block..][..block];
            let qs = &blk[geo.words_at()..];
            let qs_at = geo.qs_at() + s * ROWS * geo.qs;
            for c in 0..geo.qs / 4 {
                let (at, w) = (qs_at + 32 * c + 4 * j, geo.source_word(c));
                rec[at..at + 4].copy_from_slice(&qs[4 * w..4 * w + 4]);
            }
        }
        if geo.qh {
            let qh = u32::from_le_bytes([first[2], first[3], first[4], first[5]]);
            for (h, m) in masks.iter_mut().enumerate() {
                *m |= ((qh >> qh_shift(h)) & 0xF) << (4 * j);
            }
        }
    }
    if geo.qh {
        for (h, m) in masks.iter().enumerate() {
            rec[16 + 4 * h..16 + 4 * h + 4].copy_from_slice(&m.to_le_bytes());
        }
    }
}

/// The inverse of [`pack`]: record `r`'s blocks of the 8 rows, each with the record's header.
fn unpack(geo: Geometry, rec: &[u8], rows: &mut [&mut [u8]; ROWS], r: usize) {
    #[cfg(target_arch = "x86_64")]
    if !geo.header_last
        && crate::backend::cpu::simd::level() == crate::backend::cpu::simd::Level::Avx512
    {
        unpack_fields_all(geo, rec, rows, r);
        // SAFETY: AVX-512 F (the level).
        unsafe { unpack_words_avx512(geo, rec, rows, r) };
        return;
    }
    for (j, row) in rows.iter_mut().enumerate() {
        unpack_row(geo, rec, row, r, j);
    }
}

/// Record `r`'s blocks of row `j` (of the record's 8) into that row's natural bytes `row`.
#[inline]
fn unpack_row(geo: Geometry, rec: &[u8], row: &mut [u8], r: usize, j: usize) {
    unpack_fields(geo, rec, row, r, j);
    let block = geo.block();
    for s in 0..geo.share {
        let blk = &mut row[(r * geo.share + s) * block..][..block];
        // Whole four-byte words of `qs` rather than bytes.
        let qs = &mut blk[geo.words_at()..];
        let qs_at = geo.qs_at() + s * ROWS * geo.qs;
        for c in 0..geo.qs / 4 {
            let (at, w) = (qs_at + 32 * c + 4 * j, geo.source_word(c));
            qs[4 * w..4 * w + 4].copy_from_slice(&rec[at..at + 4]);
        }
    }
}

/// The header fields (and Q5_0's fifth bits) of record `r`'s blocks of row `j`.
#[inline]
fn unpack_fields(geo: Geometry, rec: &[u8], row: &mut [u8], r: usize, j: usize) {
    let block = geo.block();
    for s in 0..geo.share {
        let blk = &mut row[(r * geo.share + s) * block..][..block];
        // Whole fields rather than bytes (a prefill de-interleaves every weight once per
        // matmul): the f16 header fields, then the fifth bits.
        for f in 0..geo.header / 2 {
            let (at, to) = (16 * f + 2 * j, geo.fields_at() + 2 * f);
            blk[to..to + 2].copy_from_slice(&rec[at..at + 2]);
        }
        if geo.qh {
            blk[2..6].copy_from_slice(&row_qh(rec, j).to_le_bytes());
        }
    }
}

/// [`unpack_fields`] for all 8 rows at once, the bounds checked once per block: row by row,
/// with a slice per field, this took 8% of a 512-token prefill of the 0.5B-shape Q4_0 (two
/// bytes of header per 18-byte block).
#[cfg(target_arch = "x86_64")]
#[inline]
fn unpack_fields_all(geo: Geometry, rec: &[u8], rows: &mut [&mut [u8]; ROWS], r: usize) {
    let block = geo.block();
    assert!(rec.len() >= ROWS * (geo.header + geo.qh_bytes()));
    for s in 0..geo.share {
        let base = (r * geo.share + s) * block;
        assert!(rows.iter().all(|w| base + block <= w.len()));
        for f in 0..geo.header / 2 {
            let to = base + geo.fields_at() + 2 * f;
            for (j, row) in rows.iter_mut().enumerate() {
                // SAFETY: field f of row j lies in the record's header (checked above), and
                // `to + 2 <= base + block <= row.len()`.
                unsafe {
                    let v = rec
                        .as_ptr()
                        .add(16 * f + 2 * j)
                        .cast::<u16>()
                        .read_unaligned();
                    row.as_mut_ptr().add(to).cast::<u16>().write_unaligned(v);
                }
            }
        }
        if geo.qh {
            for (j, row) in rows.iter_mut().enumerate() {
                row[base + 2..base + 6].copy_from_slice(&row_qh(rec, j).to_le_bytes());
            }
        }
    }
}

/// The `qs` words of record `r` for all 8 rows, for the layouts whose words keep their order
/// (not Q6_K's): a record stores word `c` of the 8 rows side by side, so 4 words of the 8 rows
/// (two 64-byte loads) are 4 consecutive words of each row after one two-source permutation
/// per 4 rows. Word by word (`unpack_row`), this took 15% of a 512-token prefill of the
/// 0.5B-shape Q4_0 on the AMX path.
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn unpack_words_avx512(geo: Geometry, rec: &[u8], rows: &mut [&mut [u8]; ROWS], r: usize) {
    use std::arch::x86_64::*;
    assert!(!geo.header_last, "Q6_K's words are reordered");
    let (block, words) = (geo.block(), geo.qs / 4);
    // Lane l of the first result: row l / 4, word l % 4 (of the window of 4 words); the
    // window holds word c of row j at index 8 c + j.
    let idx: [i32; 16] = std::array::from_fn(|l| (8 * (l % 4) + l / 4) as i32);
    let lo_idx = _mm512_loadu_si512(idx.as_ptr().cast());
    let hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(4));
    for s in 0..geo.share {
        let qs_at = geo.qs_at() + s * ROWS * geo.qs;
        let at = (r * geo.share + s) * block + geo.words_at();
        assert!(qs_at + ROWS * geo.qs <= rec.len() && rows.iter().all(|w| at + geo.qs <= w.len()));
        let src = rec.as_ptr().add(qs_at);
        let mut c = 0;
        while c + 4 <= words {
            let a = _mm512_loadu_si512(src.add(32 * c).cast());
            let b = _mm512_loadu_si512(src.add(32 * c + 64).cast());
            let lo = _mm512_permutex2var_epi32(a, lo_idx, b);
            let hi = _mm512_permutex2var_epi32(a, hi_idx, b);
            let parts = [
                _mm512_extracti32x4_epi32::<0>(lo),
                _mm512_extracti32x4_epi32::<1>(lo),
                _mm512_extracti32x4_epi32::<2>(lo),
                _mm512_extracti32x4_epi32::<3>(lo),
                _mm512_extracti32x4_epi32::<0>(hi),
                _mm512_extracti32x4_epi32::<1>(hi),
                _mm512_extracti32x4_epi32::<2>(hi),
                _mm512_extracti32x4_epi32::<3>(hi),
            ];
            for (row, v) in rows.iter_mut().zip(parts) {
                _mm_storeu_si128(row.as_mut_ptr().add(at + 4 * c).cast(), v);
            }
            c += 4;
        }
        for c in c..words {
            for (j, row) in rows.iter_mut().enumerate() {
                let from = qs_at + 32 * c + 4 * j;
                row[at + 4 * c..at + 4 * c + 4].copy_from_slice(&rec[from..from + 4]);
            }
        }
    }
}

/// Row `row` of the interleaved matrix `src` (layout `layout`, `nb` blocks per row) restored to
/// its file format's bytes in `dst` (`nb` blocks): an embedding lookup decodes only the rows
/// it needs, not their groups of 8.
pub(crate) fn deinterleave_row(
    layout: GgmlType,
    src: &[u8],
    nb: usize,
    row: usize,
    dst: &mut [u8],
) {
    let geo = Geometry::of_layout(layout);
    let group_bytes = geo.group_bytes(nb);
    let recs = &src[row / ROWS * group_bytes..][..group_bytes];
    for (r, rec) in recs.chunks_exact(geo.record()).enumerate() {
        unpack_row(geo, rec, dst, r, row % ROWS);
    }
}

/// Rearranges `src` (natural rows of `format`, one of [`Geometry::of`]'s, `n` a multiple of 8,
/// `nb` blocks per row) into `dst` (same length) in the interleaved layout. Runs on the pool.
#[cfg(test)]
pub(crate) fn interleave(format: GgmlType, src: &[u8], nb: usize, dst: &mut [u8]) {
    // A file format's geometry is its interleaved layout's (one header per record).
    assert!(
        interleave_as(format, src, nb, dst),
        "interleave: one header per block never differs"
    );
}

/// [`interleave`] into any interleaved layout (`Q4_1x8s2` too), `dst` sized for it
/// (`layout.row_bytes(k)` per row). False, with `dst` unspecified, when the layout shares a
/// header between blocks whose headers differ in `src`.
pub(crate) fn interleave_as(layout: GgmlType, src: &[u8], nb: usize, dst: &mut [u8]) -> bool {
    let geo = Geometry::of_layout(layout);
    let (block, record) = (geo.block(), geo.record());
    let src_group = ROWS * nb * block;
    if src_group == 0 {
        return true;
    }
    assert!(
        nb.is_multiple_of(geo.share) && src.len().is_multiple_of(src_group),
        "interleave: partial group"
    );
    let groups = src.len() / src_group;
    let group_bytes = geo.group_bytes(nb);
    assert_eq!(dst.len(), groups * group_bytes, "interleave: wrong length");
    if geo.share > 1 {
        // Every block must carry its record's header, or the layout would lose it.
        let header = geo.header;
        let same = src.chunks_exact(geo.share * block).all(|run| {
            let first = &run[..header];
            run.chunks_exact(block).all(|b| &b[..header] == first)
        });
        if !same {
            return false;
        }
    }
    let out = SendPtr(dst.as_mut_ptr());
    parallel_chunks(groups, 16, &|g0, g1| {
        // SAFETY: groups g0..g1 of dst belong to this chunk alone and lie inside dst.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(out.get().add(g0 * group_bytes), (g1 - g0) * group_bytes)
        };
        for (gi, rec_group) in dst.chunks_exact_mut(group_bytes).enumerate() {
            let group = &src[(g0 + gi) * src_group..(g0 + gi + 1) * src_group];
            let rows: [&[u8]; ROWS] =
                std::array::from_fn(|j| &group[j * nb * block..][..nb * block]);
            for (r, rec) in rec_group.chunks_exact_mut(record).enumerate() {
                pack(geo, &rows, r, rec);
            }
        }
    });
    true
}

/// Writes groups `g0..g1` of the matrix `src` in the interleaved `layout` (`nb` blocks of its
/// file format per row) to `dst` as natural rows of the file format (`(g1 - g0) 8` rows).
pub(crate) fn deinterleave(
    layout: GgmlType,
    src: &[u8],
    nb: usize,
    g0: usize,
    g1: usize,
    dst: &mut [u8],
) {
    let geo = Geometry::of_layout(layout);
    let group_bytes = geo.group_bytes(nb);
    let natural_group = ROWS * nb * geo.block();
    let src = &src[g0 * group_bytes..g1 * group_bytes];
    for (recs, group) in src
        .chunks_exact(group_bytes)
        .zip(dst.chunks_exact_mut(natural_group))
    {
        let mut parts = group.chunks_exact_mut(natural_group / ROWS);
        let mut rows: [&mut [u8]; ROWS] = std::array::from_fn(|_| parts.next().unwrap_or_default());
        for (r, rec) in recs.chunks_exact(geo.record()).enumerate() {
            unpack(geo, rec, &mut rows, r);
        }
    }
}

/// Where, in a record of the 8-bit affine layouts (`A8x8` and its shared forms), row `j`'s
/// `d` (f16) lies; its `m` lies 16 bytes further.
pub(crate) const fn affine8_d_at(j: usize) -> usize {
    2 * j
}

/// Where, in a record of the 8-bit affine layouts, row `j`'s codes `4c..4c + 4` of the record's
/// block `s` lie: after the 32-byte header, each block's 8 chunks of 32 bytes (chunk `c` holds
/// 4 codes of each row, row `j`'s at `4j`).
pub(crate) const fn affine8_codes_at(s: usize, c: usize, j: usize) -> usize {
    32 + 256 * s + 32 * c + 4 * j
}

/// Group `g` of the 8-bit affine layout `layout` (`A8x8` and its shared forms; rows of `k`
/// values) decoded to `dst`: 8 rows of `k` f32, `w = d q + m`.
pub(crate) fn dequantize_affine8(
    layout: GgmlType,
    src: &[u8],
    k: usize,
    g: usize,
    dst: &mut [f32],
) {
    let group = layout.block_size();
    let record = ROWS * layout.type_size();
    let records = k / group;
    let half = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    for r in 0..records {
        let rec = &src[(g * records + r) * record..][..record];
        for j in 0..ROWS {
            let (d, m) = (half(rec, affine8_d_at(j)), half(rec, 16 + affine8_d_at(j)));
            let row = &mut dst[j * k + r * group..][..group];
            for s in 0..group / 32 {
                for c in 0..8 {
                    let o = affine8_codes_at(s, c, j);
                    for t in 0..4 {
                        row[32 * s + 4 * c + t] = rec[o + t] as f32 * d + m;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_round_trips_and_places_bytes_as_documented() {
        for (format, block, h) in [
            (GgmlType::Q4_0, 18, 2),
            (GgmlType::Q4_1, 20, 4),
            (GgmlType::Q5_0, 22, 6),
            (GgmlType::Q8_0, 34, 2),
            (GgmlType::Q4_K, 144, 4),
            (GgmlType::Q5_K, 176, 4),
            (GgmlType::Q6_K, 210, 0),
        ] {
            let record = ROWS * block;
            let (n, nb) = (24, 3);
            let src: Vec<u8> = (0..n * nb * block)
                .map(|i| (i * 7 + i / 251) as u8)
                .collect();
            let mut packed = vec![0u8; src.len()];
            interleave(format, &src, nb, &mut packed);
            // Row 13 (group 1, lane 5), block 2: scale, Q4_1's minimum, and qs byte 9 (chunk
            // 2, byte 1).
            let blk = &src[13 * nb * block + 2 * block..][..block];
            let rec = &packed[(nb + 2) * record..][..record];
            let d_at = if format == GgmlType::Q6_K { 208 } else { 0 };
            assert_eq!(&rec[10..12], &blk[d_at..d_at + 2], "{format}");
            if matches!(format, GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K) {
                assert_eq!(&rec[16 + 10..16 + 12], &blk[2..4]);
            }
            let at = qs_at(format);
            // Q6_K's record word 2 is its third scale word (block word 50).
            let w2 = if format == GgmlType::Q6_K {
                4 * 50
            } else {
                h + 8
            };
            assert_eq!(rec[at + 64 + 20 + 1], blk[w2 + 1], "{format}");
            if format == GgmlType::Q6_K {
                // Record word 4 + 24 + 3 * 2 + 2 (half 1, word 2, H) is qh word 32 + 8 + 2.
                assert_eq!(rec[at + 36 * 32 + 20 + 1], blk[4 * 42 + 1]);
            }
            if format == GgmlType::Q8_0 {
                // qs byte 29: chunk 7, byte 1.
                assert_eq!(rec[at + 7 * 32 + 20 + 1], blk[h + 29]);
            }
            if format == GgmlType::Q5_0 {
                // The fifth bit of value 18 (bit 18 of qh) is bit 4 * 5 + 2 of chunk mask 4
                // (high nibbles of chunk 0).
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let mask = u32::from_le_bytes([rec[32], rec[33], rec[34], rec[35]]);
                assert_eq!((mask >> 22) & 1, (qh >> 18) & 1);
            }
            let mut back = vec![0u8; src.len()];
            deinterleave(format, &packed, nb, 0, n / ROWS, &mut back);
            assert_eq!(back, src, "{format}");
            let mut part = vec![0u8; nb * record];
            deinterleave(format, &packed, nb, 2, 3, &mut part);
            assert_eq!(part, src[2 * nb * record..], "{format}");
        }
    }

    /// `unpack` (the AVX-512 word path where present) against `unpack_row` word by word, for
    /// every interleaved layout with ordered words, shared-header ones included, on records of
    /// arbitrary bytes.
    #[test]
    fn vector_unpack_matches_word_by_word() {
        for layout in [
            GgmlType::Q4_0x8,
            GgmlType::Q4_1x8,
            GgmlType::Q4_1x8s2,
            GgmlType::Q4_1x8s4,
            GgmlType::Q5_0x8,
            GgmlType::Q8_0x8,
            GgmlType::Q4_Kx8,
            GgmlType::Q5_Kx8,
            GgmlType::Q6_Kx8,
        ] {
            let geo = Geometry::of_layout(layout);
            let recs = 3;
            let src: Vec<u8> = (0..recs * geo.record())
                .map(|i| (i * 13 + i / 7) as u8)
                .collect();
            let row_bytes = recs * geo.share * geo.block();
            let (mut fast, mut slow) = (vec![0u8; ROWS * row_bytes], vec![0u8; ROWS * row_bytes]);
            for (r, rec) in src.chunks_exact(geo.record()).enumerate() {
                let mut parts = fast.chunks_exact_mut(row_bytes);
                let mut rows: [&mut [u8]; ROWS] = std::array::from_fn(|_| parts.next().unwrap());
                unpack(geo, rec, &mut rows, r);
                for (j, row) in slow.chunks_exact_mut(row_bytes).enumerate() {
                    unpack_row(geo, rec, row, r, j);
                }
            }
            assert_eq!(fast, slow, "{layout}");
        }
    }
}
