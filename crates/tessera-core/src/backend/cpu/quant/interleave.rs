//! The row-interleaved layout [`GgmlType::Q4_0x8`]: Q4_0 blocks of 8 consecutive weight rows
//! stored together, so that one 256-bit register holds 4 bytes of each of the 8 rows.
//!
//! Why: the natural layout puts a row's 32 values per block in one register, so every block's
//! integer dot product ends in lanes that must be summed horizontally, and the 18-byte blocks
//! make the 8 scales of a group a gather. With 8 rows in the 8 lanes of a register the
//! multiply-adds (`vpdpbusd`, 4 bytes per i32 lane) accumulate each row in its own lane, a
//! broadcast activation word meets all 8 rows, and the 8 scales are one 16-byte load: the
//! decode kernel (`x86/blocks32x8.rs`) runs about twice as fast as the natural one.
//!
//! Layout: the matrix is `n / 8` groups; group `g` is `nb` records of 144 bytes (the same bytes
//! as the 8 natural blocks), one per block index `b`, at `(g nb + b) 144`:
//! - bytes `0..16`: the f16 scales `d` of rows `8g + j`, `j = 0..8`, at `2j`;
//! - bytes `16..144`: 4 chunks of 32 bytes; chunk `c` holds bytes `4c..4c + 4` of row `j`'s
//!   `qs` at `16 + 32c + 4j` (the low nibbles are values `4c..4c + 4` of the block, the high
//!   nibbles values `16 + 4c..16 + 4c + 4`).

use crate::backend::cpu::copy::SendPtr;
use crate::backend::cpu::pool::parallel_chunks;

/// Rows per interleaved group.
pub(crate) const ROWS: usize = 8;
/// Bytes of one Q4_0 block.
const BLOCK: usize = 18;
/// Bytes of one record (8 blocks).
const RECORD: usize = ROWS * BLOCK;

/// Where byte `i` (`0..18`) of row `j`'s block lands in its record.
#[inline(always)]
fn record_offset(j: usize, i: usize) -> usize {
    if i < 2 {
        2 * j + i
    } else {
        let q = i - 2;
        16 + 32 * (q / 4) + 4 * j + q % 4
    }
}

/// Rearranges `src` (natural Q4_0 rows, `n` a multiple of 8, `nb` blocks per row) into `dst`
/// (same length) in the interleaved layout. Runs on the pool.
pub(crate) fn interleave_q4_0(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len(), "interleave: lengths differ");
    let group_bytes = nb * RECORD;
    if group_bytes == 0 {
        return;
    }
    assert!(
        src.len().is_multiple_of(group_bytes),
        "interleave: partial group"
    );
    let groups = src.len() / group_bytes;
    let out = SendPtr(dst.as_mut_ptr());
    parallel_chunks(groups, 16, &|g0, g1| {
        // SAFETY: groups g0..g1 of dst belong to this chunk alone and lie inside dst.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(out.get().add(g0 * group_bytes), (g1 - g0) * group_bytes)
        };
        for (gi, rec_group) in dst.chunks_exact_mut(group_bytes).enumerate() {
            let rows = &src[(g0 + gi) * group_bytes..(g0 + gi + 1) * group_bytes];
            for (b, rec) in rec_group.chunks_exact_mut(RECORD).enumerate() {
                for j in 0..ROWS {
                    let blk = &rows[j * nb * BLOCK + b * BLOCK..][..BLOCK];
                    for (i, &byte) in blk.iter().enumerate() {
                        rec[record_offset(j, i)] = byte;
                    }
                }
            }
        }
    });
}

/// Writes groups `g0..g1` of the interleaved matrix `src` (`nb` blocks per row) to `dst` as
/// natural Q4_0 rows (`(g1 - g0) 8` rows).
pub(crate) fn deinterleave_q4_0(src: &[u8], nb: usize, g0: usize, g1: usize, dst: &mut [u8]) {
    let group_bytes = nb * RECORD;
    let src = &src[g0 * group_bytes..g1 * group_bytes];
    for (recs, rows) in src
        .chunks_exact(group_bytes)
        .zip(dst.chunks_exact_mut(group_bytes))
    {
        for (b, rec) in recs.chunks_exact(RECORD).enumerate() {
            for j in 0..ROWS {
                let blk = &mut rows[j * nb * BLOCK + b * BLOCK..][..BLOCK];
                for (i, byte) in blk.iter_mut().enumerate() {
                    *byte = rec[record_offset(j, i)];
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
        let (n, nb) = (24, 3);
        let src: Vec<u8> = (0..n * nb * BLOCK)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let mut packed = vec![0u8; src.len()];
        interleave_q4_0(&src, nb, &mut packed);
        // Row 13 (group 1, lane 5), block 2: scale and qs byte 9 (chunk 2, byte 1).
        let blk = &src[13 * nb * BLOCK + 2 * BLOCK..][..BLOCK];
        let rec = &packed[(nb + 2) * RECORD..][..RECORD];
        assert_eq!(&rec[10..12], &blk[0..2]);
        assert_eq!(rec[16 + 64 + 20 + 1], blk[2 + 9]);
        let mut back = vec![0u8; src.len()];
        deinterleave_q4_0(&packed, nb, 0, n / ROWS, &mut back);
        assert_eq!(back, src);
        let mut part = vec![0u8; nb * RECORD];
        deinterleave_q4_0(&packed, nb, 2, 3, &mut part);
        assert_eq!(part, src[2 * nb * RECORD..]);
    }
}
