//! Walking strided operands row by row.
//!
//! Kernels see an operation as "for each innermost row, run a tight loop". Before walking,
//! adjacent dims that are contiguous in every operand are merged, so a contiguous array is one
//! long row and a transposed one is as few rows as its layout allows.

use super::pool;
use crate::layout::Dims;

/// Shape and per-operand strides after merging dims.
#[derive(Debug, Clone)]
pub struct Walk<const K: usize> {
    pub shape: Dims<usize>,
    pub strides: [Dims<isize>; K],
}

impl<const K: usize> Walk<K> {
    /// Merges dims; strides are per operand, each with `shape.len()` entries.
    pub fn new(shape: &[usize], strides: [&[isize]; K]) -> Walk<K> {
        let mut out_shape: Dims<usize> = Dims::new();
        let mut out_strides: [Dims<isize>; K] = std::array::from_fn(|_| Dims::new());
        for (i, &d) in shape.iter().enumerate() {
            if d == 1 {
                continue;
            }
            if let Some(&last) = out_shape.last() {
                // Merge dim i into the previous one if, for all operands, prev stride == d * stride.
                let mergeable = (0..K).all(|k| {
                    let prev = *out_strides[k].last().unwrap_or(&0);
                    prev == strides[k][i] * d as isize
                });
                if mergeable {
                    let n = out_shape.len() - 1;
                    out_shape[n] = last * d;
                    for k in 0..K {
                        out_strides[k][n] = strides[k][i];
                    }
                    continue;
                }
            }
            out_shape.push(d);
            for k in 0..K {
                out_strides[k].push(strides[k][i]);
            }
        }
        if out_shape.is_empty() {
            out_shape.push(1);
            for s in out_strides.iter_mut() {
                s.push(1);
            }
        }
        Walk {
            shape: out_shape,
            strides: out_strides,
        }
    }

    pub fn inner_len(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    pub fn inner_strides(&self) -> [isize; K] {
        std::array::from_fn(|k| *self.strides[k].last().unwrap_or(&1))
    }

    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len() - 1].iter().product()
    }

    /// Calls `f(row, offsets)` for rows `start..end`, where `offsets[k]` is operand k's element
    /// offset of the row's first element.
    pub fn for_rows(&self, start: usize, end: usize, mut f: impl FnMut(usize, [isize; K])) {
        let outer = &self.shape[..self.shape.len() - 1];
        let nd = outer.len();
        if start >= end {
            return;
        }
        // Odometer initialised at `start`.
        let mut idx = vec![0usize; nd];
        let mut rem = start;
        for d in (0..nd).rev() {
            idx[d] = rem % outer[d];
            rem /= outer[d];
        }
        let mut offs: [isize; K] =
            std::array::from_fn(|k| (0..nd).map(|d| idx[d] as isize * self.strides[k][d]).sum());
        for row in start..end {
            f(row, offs);
            // Advance.
            let mut d = nd;
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                for (k, o) in offs.iter_mut().enumerate() {
                    *o += self.strides[k][d];
                }
                if idx[d] < outer[d] {
                    break;
                }
                for (k, o) in offs.iter_mut().enumerate() {
                    *o -= self.strides[k][d] * outer[d] as isize;
                }
                idx[d] = 0;
            }
        }
    }

    /// Runs `f(row, offsets, len)` over all rows, in parallel when there are at least
    /// `min_elems_per_task` elements per task. `len` is the number of inner elements to process
    /// from `offsets`: the whole row, or a piece of it when there are too few rows to keep every
    /// thread busy (a contiguous array is one long row).
    pub fn par_rows(
        &self,
        min_elems_per_task: usize,
        f: &(dyn Fn(usize, [isize; K], usize) + Sync),
    ) {
        let rows = self.rows();
        let inner = self.inner_len();
        let pool = pool::global();
        let threads = pool.threads();
        if threads == 1 || rows * inner < 2 * min_elems_per_task {
            self.for_rows(0, rows, |r, o| f(r, o, inner));
            return;
        }
        if rows >= 4 * threads {
            let min_rows = min_elems_per_task.div_ceil(inner.max(1)).max(1);
            pool::parallel_chunks(rows, min_rows, &|s, e| {
                self.for_rows(s, e, |r, o| f(r, o, inner))
            });
            return;
        }
        // Few long rows: cut each into pieces (multiples of 64 elements, cache-line friendly).
        let want = (4 * threads).div_ceil(rows);
        let piece = inner
            .div_ceil(want)
            .max(min_elems_per_task.min(inner))
            .next_multiple_of(64);
        let pieces = inner.div_ceil(piece);
        let strides = self.inner_strides();
        pool.parallel_for(rows * pieces, &|t| {
            let (r, p) = (t / pieces, t % pieces);
            let start = p * piece;
            let len = piece.min(inner - start);
            self.for_rows(r, r + 1, |row, offs| {
                let o: [isize; K] = std::array::from_fn(|k| offs[k] + start as isize * strides[k]);
                f(row, o, len);
            });
        });
    }
}

/// Strides of `shape_in` broadcast to `shape_out` (size-1 and missing dims get stride 0).
pub fn broadcast_strides(
    shape_in: &[usize],
    strides_in: &[isize],
    shape_out: &[usize],
) -> Dims<isize> {
    let pad = shape_out.len() - shape_in.len();
    let mut out = Dims::from_elem(0isize, shape_out.len());
    for i in 0..shape_in.len() {
        out[pad + i] = if shape_in[i] == 1 { 0 } else { strides_in[i] };
    }
    out
}

/// Elements per task below which splitting across threads costs more than it saves.
pub const PAR_MIN_ELEMS: usize = 1 << 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_contiguous_dims() {
        let w = Walk::<1>::new(&[2, 3, 4], [&[12, 4, 1]]);
        assert_eq!(w.shape[..], [24]);
        let w = Walk::<2>::new(&[2, 3], [&[3, 1], &[1, 2]]);
        assert_eq!(w.shape[..], [2, 3]);
    }

    #[test]
    fn rows_visit_offsets_in_order() {
        let w = Walk::<1>::new(&[2, 3, 2], [&[1, 4, 12]]);
        let mut seen = vec![];
        w.for_rows(0, w.rows(), |r, o| seen.push((r, o[0])));
        assert_eq!(seen, vec![(0, 0), (1, 4), (2, 8), (3, 1), (4, 5), (5, 9)]);
        let mut part = vec![];
        w.for_rows(2, 5, |r, o| part.push((r, o[0])));
        assert_eq!(part, vec![(2, 8), (3, 1), (4, 5)]);
    }
}
