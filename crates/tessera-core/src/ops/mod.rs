//! Public ops. Policy lives here and runs eagerly (validation, type promotion, broadcasting,
//! output shapes), so errors appear at the call that caused them; then a node is built.
//!
//! Names and semantics follow MLX (and so NumPy): broadcasting from the trailing dims, MLX's
//! type-promotion table ([`promote_types`](crate::promote_types)), negative axes from the end.

mod affine_quant;
mod collective;
mod creation;
mod elementwise;
mod fast;
mod index;
mod linalg;
mod overload;
mod quant;
mod reduce;
mod shape;
mod sort;

pub use affine_quant::*;
pub use collective::*;
pub use creation::*;
pub use elementwise::*;
pub use fast::*;
pub use index::*;
pub use linalg::*;
pub use quant::*;
pub use reduce::*;
pub use shape::*;
pub use sort::*;

use crate::error::{Error, Result, fmt_shape, invalid};

/// Which axes an op works over: all of them, or a list (negative counts from the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axes {
    All,
    Some(Vec<isize>),
}

impl From<isize> for Axes {
    fn from(a: isize) -> Axes {
        Axes::Some(vec![a])
    }
}
impl From<i32> for Axes {
    fn from(a: i32) -> Axes {
        Axes::Some(vec![a as isize])
    }
}
impl From<Vec<isize>> for Axes {
    fn from(v: Vec<isize>) -> Axes {
        Axes::Some(v)
    }
}
impl From<&[isize]> for Axes {
    fn from(v: &[isize]) -> Axes {
        Axes::Some(v.to_vec())
    }
}
impl<const N: usize> From<[isize; N]> for Axes {
    fn from(v: [isize; N]) -> Axes {
        Axes::Some(v.to_vec())
    }
}
impl From<Option<isize>> for Axes {
    fn from(v: Option<isize>) -> Axes {
        match v {
            None => Axes::All,
            Some(a) => Axes::Some(vec![a]),
        }
    }
}

/// Maps a possibly negative axis into `0..ndim`.
pub fn normalize_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    let n = ndim as isize;
    if axis < -n || axis >= n {
        return invalid(
            op,
            format!("axis {axis} is out of bounds for an array of dimension {ndim}"),
        );
    }
    Ok(if axis < 0 {
        (axis + n) as usize
    } else {
        axis as usize
    })
}

/// Normalised, sorted, duplicate-free axes.
pub(crate) fn normalize_axes(op: &'static str, axes: &Axes, ndim: usize) -> Result<Vec<usize>> {
    match axes {
        Axes::All => Ok((0..ndim).collect()),
        Axes::Some(v) => {
            let mut out = Vec::with_capacity(v.len());
            for &a in v {
                let a = normalize_axis(op, a, ndim)?;
                if out.contains(&a) {
                    return invalid(op, format!("repeated axis {a}"));
                }
                out.push(a);
            }
            out.sort_unstable();
            Ok(out)
        }
    }
}

/// The NumPy broadcast of two shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    broadcast_dims(op, a, b).map(|d| d.to_vec())
}

/// [`broadcast_shapes`] without a heap allocation (up to five dims, see `layout::Dims`), for the
/// op builders.
pub(crate) fn broadcast_dims(
    op: &'static str,
    a: &[usize],
    b: &[usize],
) -> Result<crate::layout::Dims<usize>> {
    let n = a.len().max(b.len());
    let mut out = crate::layout::Dims::from_elem(0usize, n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::Broadcast {
                op,
                a: a.to_vec(),
                b: b.to_vec(),
            });
        };
    }
    Ok(out)
}

pub(crate) fn check_shape_size(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Invalid {
            op,
            msg: format!(
                "shape {} has more elements than fit in memory",
                fmt_shape(shape)
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_rules() {
        assert_eq!(broadcast_shapes("t", &[3, 1], &[1, 4]).unwrap(), vec![3, 4]);
        assert_eq!(broadcast_shapes("t", &[], &[2, 3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast_shapes("t", &[0, 3], &[1, 3]).unwrap(), vec![0, 3]);
        assert!(broadcast_shapes("t", &[2, 3], &[3, 2]).is_err());
    }
}
