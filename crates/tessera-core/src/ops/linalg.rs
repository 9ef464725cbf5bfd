//! Linear algebra: matmul and what reduces to it (tensordot, einsum, inner, outer).

use super::{broadcast_shapes, normalize_axis};
use crate::array::Array;
use crate::dtype::promote_types;
use crate::error::{Error, Result, fmt_shape, invalid};
use crate::primitive::Primitive;

/// Matrix product with NumPy semantics: `(..., m, k) @ (..., k, n) -> (..., m, n)`, batched over
/// the leading dims, which broadcast. A 1-D operand is treated as a row (left) or column (right)
/// vector and that dim is removed from the result. Dtype: the promoted dtype of the two (MLX
/// table; integers stay integers). `Err` for 0-d operands, differing inner dims, or batch dims
/// that do not broadcast.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// let b = Array::from_slice(&[1.0f32, 1.0], &[2]).unwrap();
/// assert_eq!(ops::matmul(&a, &b).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 7.0]);
/// let batch = ops::zeros(&[5, 1, 3, 2], tessera_core::Dtype::F32).unwrap();
/// assert_eq!(ops::matmul(&batch, &ops::zeros(&[4, 2, 6], tessera_core::Dtype::F32).unwrap()).unwrap().shape(), &[5, 4, 3, 6]);
/// ```
pub fn matmul(a: &Array, b: &Array) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return invalid(
            "matmul",
            format!(
                "scalars are not allowed: {} @ {}",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        );
    }
    let (a2, b2) = (
        if a.ndim() == 1 {
            super::reshape(a, &[1, a.size()])?
        } else {
            a.clone()
        },
        if b.ndim() == 1 {
            super::reshape(b, &[b.size(), 1])?
        } else {
            b.clone()
        },
    );
    let (na, nb) = (a2.ndim(), b2.ndim());
    let (m, k) = (a2.shape()[na - 2], a2.shape()[na - 1]);
    let (k2, n) = (b2.shape()[nb - 2], b2.shape()[nb - 1]);
    if k != k2 {
        return invalid(
            "matmul",
            format!(
                "inner dimensions differ: {} @ {}",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        );
    }
    let batch = broadcast_shapes("matmul", &a2.shape()[..na - 2], &b2.shape()[..nb - 2])?;
    let dt = promote_types(a.dtype(), b.dtype());
    let mut sa = batch.clone();
    sa.extend_from_slice(&[m, k]);
    let mut sb = batch.clone();
    sb.extend_from_slice(&[k, n]);
    let a3 = super::broadcast_to(&a2.astype(dt)?, &sa)?;
    let b3 = super::broadcast_to(&b2.astype(dt)?, &sb)?;
    let mut out = batch.clone();
    out.extend_from_slice(&[m, n]);
    let r = Array::lazy(Primitive::Matmul, vec![a3, b3], out.clone(), dt);
    match (a.ndim() == 1, b.ndim() == 1) {
        (false, false) => Ok(r),
        (true, false) => {
            out.remove(out.len() - 2);
            super::reshape(&r, &out)
        }
        (false, true) => {
            out.pop();
            super::reshape(&r, &out)
        }
        (true, true) => {
            out.truncate(out.len() - 2);
            super::reshape(&r, &out)
        }
    }
}

/// `beta * c + alpha * (a @ b)`: `c` broadcasts with the [`matmul`] result, and the dtype is the
/// promotion of `c`'s and the product's (`alpha`/`beta` are converted to it, so they truncate for
/// integer dtypes). `Err` as [`matmul`], or if `c` does not broadcast.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// let c = Array::from_slice(&[1.0f32, 1.0], &[2]).unwrap();
/// let r = ops::addmm(&c, &a, &a, 0.5, 2.0).unwrap();
/// assert_eq!(r.to_vec::<f32>().unwrap(), vec![5.5, 7.0, 9.5, 13.0]);
/// ```
pub fn addmm(c: &Array, a: &Array, b: &Array, alpha: f64, beta: f64) -> Result<Array> {
    let p = matmul(a, b)?;
    let dt = promote_types(p.dtype(), c.dtype());
    let p = if alpha == 1.0 {
        p
    } else {
        super::multiply(&p, &Array::scalar_of(alpha, dt))?
    };
    let c = if beta == 1.0 {
        c.clone()
    } else {
        super::multiply(c, &Array::scalar_of(beta, dt))?
    };
    super::add(&p, &c)
}

/// Outer product of the flattened inputs: shape `(a.size, b.size)`, dtype promoted as
/// [`multiply`](super::multiply). Never `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2], &[2]).unwrap();
/// let b = Array::from_slice(&[1i32, 10, 100], &[3]).unwrap();
/// let o = ops::outer(&a, &b).unwrap();
/// assert_eq!(o.shape(), &[2, 3]);
/// assert_eq!(o.to_vec::<i32>().unwrap(), vec![1, 10, 100, 2, 20, 200]);
/// ```
pub fn outer(a: &Array, b: &Array) -> Result<Array> {
    let a = super::reshape(a, &[a.size(), 1])?;
    let b = super::reshape(b, &[1, b.size()])?;
    super::multiply(&a, &b)
}

/// Sum product over the last axes of `a` and `b`: shape `a.shape[..-1] + b.shape[..-1]`, dtype
/// promoted as [`matmul`]. A 0-d operand multiplies instead (broadcast, as NumPy). `Err` if the
/// last dims differ.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
/// let b = Array::from_slice(&[4i32, 5, 6, 1, 1, 1], &[2, 3]).unwrap();
/// let r = ops::inner(&a, &b).unwrap();
/// assert_eq!(r.shape(), &[2]);
/// assert_eq!(r.to_vec::<i32>().unwrap(), vec![32, 6]);
/// ```
pub fn inner(a: &Array, b: &Array) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return super::multiply(a, b);
    }
    tensordot(a, b, &[-1], &[-1])
}

/// Contracts `axes_a` of `a` with `axes_b` of `b` (pairwise, negative from the end), as NumPy's
/// tensordot: the output shape is `a`'s free dims followed by `b`'s, the dtype promoted as
/// [`matmul`]. `Err` for lists of different lengths, an out-of-range axis, or paired dims of
/// different sizes.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::ones(&[2, 3, 4], Dtype::F32).unwrap();
/// let b = ops::ones(&[4, 3, 5], Dtype::F32).unwrap();
/// let t = ops::tensordot(&a, &b, &[1, 2], &[1, 0]).unwrap();
/// assert_eq!(t.shape(), &[2, 5]);
/// assert_eq!(t.to_vec::<f32>().unwrap(), vec![12.0; 10]);
/// ```
pub fn tensordot(a: &Array, b: &Array, axes_a: &[isize], axes_b: &[isize]) -> Result<Array> {
    if axes_a.len() != axes_b.len() {
        return invalid(
            "tensordot",
            format!("{} axes for a but {} for b", axes_a.len(), axes_b.len()),
        );
    }
    let ca: Vec<usize> = axes_a
        .iter()
        .map(|&x| normalize_axis("tensordot", x, a.ndim()))
        .collect::<Result<_>>()?;
    let cb: Vec<usize> = axes_b
        .iter()
        .map(|&x| normalize_axis("tensordot", x, b.ndim()))
        .collect::<Result<_>>()?;
    for (&i, &j) in ca.iter().zip(&cb) {
        if a.shape()[i] != b.shape()[j] {
            return invalid(
                "tensordot",
                format!(
                    "axis {i} of {} and axis {j} of {} differ in size",
                    fmt_shape(a.shape()),
                    fmt_shape(b.shape())
                ),
            );
        }
    }
    let fa: Vec<usize> = (0..a.ndim()).filter(|i| !ca.contains(i)).collect();
    let fb: Vec<usize> = (0..b.ndim()).filter(|i| !cb.contains(i)).collect();
    let k: usize = ca.iter().map(|&i| a.shape()[i]).product();
    let m: usize = fa.iter().map(|&i| a.shape()[i]).product();
    let n: usize = fb.iter().map(|&i| b.shape()[i]).product();
    let pa: Vec<isize> = fa.iter().chain(&ca).map(|&i| i as isize).collect();
    let pb: Vec<isize> = cb.iter().chain(&fb).map(|&i| i as isize).collect();
    let a2 = super::reshape(&super::transpose(a, Some(&pa))?, &[m, k])?;
    let b2 = super::reshape(&super::transpose(b, Some(&pb))?, &[k, n])?;
    let r = matmul(&a2, &b2)?;
    let out: Vec<usize> = fa
        .iter()
        .map(|&i| a.shape()[i])
        .chain(fb.iter().map(|&i| b.shape()[i]))
        .collect();
    super::reshape(&r, &out)
}

/// Einstein summation: `"ij,jk->ik"`, `"bhqd,bhkd->bhqk"`, `"ii->i"` (diagonal), `"i,i->"`,
/// `"...ij,...jk->...ik"` (ellipsis, broadcast); without `->` the output is the ellipsis dims then
/// the labels used once, sorted (NumPy's implicit mode). Dims of size 1 broadcast. The output
/// shape follows the output labels. Dtype: float inputs give their promoted dtype; integer and
/// bool results may widen where a label is summed away (as [`sum`](super::sum) does). `Err` for
/// a bad subscript, an operand count or rank that does not match, label sizes that conflict, or
/// an output label missing from the inputs.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// let b = Array::from_slice(&[1.0f32, 1.0], &[2]).unwrap();
/// assert_eq!(ops::einsum("ij,j->i", &[a.clone(), b]).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 7.0]);
/// assert_eq!(ops::einsum("ii->i", &[a.clone()]).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 4.0]);
/// assert_eq!(ops::einsum("ij->ji", &[a]).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 3.0, 2.0, 4.0]);
/// ```
pub fn einsum(subscripts: &str, operands: &[Array]) -> Result<Array> {
    let spec: String = subscripts.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match spec.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (spec.clone(), None),
    };
    let raw: Vec<&str> = lhs.split(',').collect();
    if raw.len() != operands.len() {
        return invalid(
            "einsum",
            format!(
                "{} operands for {} input subscripts in '{subscripts}'",
                operands.len(),
                raw.len()
            ),
        );
    }
    // Ellipsis dims get private labels (Greek letters), right-aligned across operands.
    let ell = |i: usize| char::from_u32(0x3B1 + i as u32).unwrap_or('?');
    let named_of = |s: &str| -> Result<Vec<char>> {
        let v: Vec<char> = s.replacen("...", "", 1).chars().collect();
        match v.iter().find(|c| !c.is_ascii_alphabetic()) {
            Some(c) => invalid(
                "einsum",
                format!("invalid subscript '{c}' in '{subscripts}'"),
            ),
            None => Ok(v),
        }
    };
    let mut max_ell = 0usize;
    for (s, op) in raw.iter().zip(operands) {
        let named = named_of(s)?;
        if s.contains("...") {
            if op.ndim() < named.len() {
                return invalid(
                    "einsum",
                    format!(
                        "subscripts '{s}' for an operand of shape {}",
                        fmt_shape(op.shape())
                    ),
                );
            }
            max_ell = max_ell.max(op.ndim() - named.len());
        }
    }
    let ell_all: Vec<char> = (0..max_ell).map(ell).collect();
    let mut inputs: Vec<Vec<char>> = Vec::with_capacity(raw.len());
    for (s, op) in raw.iter().zip(operands) {
        let labels: Vec<char> = match s.split_once("...") {
            Some((before, after)) => {
                let n = op.ndim() - named_of(s)?.len();
                before
                    .chars()
                    .chain(ell_all[max_ell - n..].iter().copied())
                    .chain(after.chars())
                    .collect()
            }
            None => named_of(s)?,
        };
        if labels.len() != op.ndim() {
            return invalid(
                "einsum",
                format!(
                    "subscripts '{s}' for an operand of shape {}",
                    fmt_shape(op.shape())
                ),
            );
        }
        inputs.push(labels);
    }
    // Label sizes: equal, or 1 (broadcast).
    let mut sizes: Vec<(char, usize)> = vec![];
    for (labels, op) in inputs.iter().zip(operands) {
        for (&c, &d) in labels.iter().zip(op.shape()) {
            match sizes.iter_mut().find(|(l, _)| *l == c) {
                Some((_, s)) if *s != d && *s != 1 && d != 1 => {
                    return invalid("einsum", format!("label '{c}' has sizes {s} and {d}"));
                }
                Some((_, s)) => *s = (*s).max(d),
                None => sizes.push((c, d)),
            }
        }
    }
    let size_of = |c: char| {
        sizes
            .iter()
            .find(|(l, _)| *l == c)
            .map(|&(_, s)| s)
            .unwrap_or(1)
    };
    let output: Vec<char> = match rhs {
        Some(r) => {
            let named = named_of(&r)?;
            match r.split_once("...") {
                Some((b, a)) => b
                    .chars()
                    .chain(ell_all.iter().copied())
                    .chain(a.chars())
                    .collect(),
                None => named,
            }
        }
        None => {
            let mut once: Vec<char> = sizes
                .iter()
                .map(|&(c, _)| c)
                .filter(|c| {
                    c.is_ascii_alphabetic()
                        && inputs.iter().flatten().filter(|x| *x == c).count() == 1
                })
                .collect();
            once.sort_unstable();
            ell_all.iter().copied().chain(once).collect()
        }
    };
    for c in &output {
        if !sizes.iter().any(|(l, _)| l == c) {
            return invalid("einsum", format!("output label '{c}' is not in any input"));
        }
    }
    // Broadcast size-1 dims, remove repeated labels (diagonals), then contract left to right.
    let mut terms: Vec<(Array, Vec<char>)> = Vec::new();
    for (labels, op) in inputs.iter().zip(operands) {
        let target: Vec<usize> = labels.iter().map(|&c| size_of(c)).collect();
        let op = if target != op.shape() {
            super::broadcast_to(op, &target)?
        } else {
            op.clone()
        };
        terms.push(take_diagonals(op, labels.clone())?);
    }
    let (mut acc, mut acc_l) = terms.remove(0);
    for (i, (b, lb)) in terms.into_iter().enumerate() {
        let later: Vec<char> = inputs[i + 2..]
            .iter()
            .flatten()
            .copied()
            .chain(output.iter().copied())
            .collect();
        (acc, acc_l) = contract(acc, acc_l, b, lb, &later)?;
    }
    let (acc, acc_l) = sum_labels(acc, acc_l, &output)?;
    let perm: Vec<isize> = output
        .iter()
        .map(|c| {
            acc_l
                .iter()
                .position(|x| x == c)
                .map(|p| p as isize)
                .ok_or_else(|| Error::Invalid {
                    op: "einsum",
                    msg: format!("label {c} lost"),
                })
        })
        .collect::<Result<_>>()?;
    super::transpose(&acc, Some(&perm))
}

/// For labels repeated inside one operand, keeps only the diagonal (mask with eye, then sum).
fn take_diagonals(mut a: Array, mut labels: Vec<char>) -> Result<(Array, Vec<char>)> {
    loop {
        let dup = (0..labels.len()).find_map(|i| {
            (i + 1..labels.len())
                .find(|&j| labels[j] == labels[i])
                .map(|j| (i, j))
        });
        let Some((i, j)) = dup else {
            return Ok((a, labels));
        };
        let n = a.shape()[i];
        let mut eshape = vec![1usize; a.ndim()];
        eshape[i] = n;
        eshape[j] = n;
        let eye = super::reshape(&super::eye(n, None, 0, a.dtype())?, &eshape)?;
        a = super::sum(&super::multiply(&a, &eye)?, j as isize, false)?;
        labels.remove(j);
    }
}

/// Sums away labels not in `keep`.
fn sum_labels(a: Array, labels: Vec<char>, keep: &[char]) -> Result<(Array, Vec<char>)> {
    let drop: Vec<isize> = (0..labels.len())
        .filter(|&i| !keep.contains(&labels[i]))
        .map(|i| i as isize)
        .collect();
    if drop.is_empty() {
        return Ok((a, labels));
    }
    let kept: Vec<char> = labels
        .iter()
        .copied()
        .filter(|c| keep.contains(c))
        .collect();
    Ok((super::sum(&a, drop, false)?, kept))
}

/// Contracts two terms with one batched matmul: (batch, free_a, k) @ (batch, k, free_b).
fn contract(
    a: Array,
    la: Vec<char>,
    b: Array,
    lb: Vec<char>,
    later: &[char],
) -> Result<(Array, Vec<char>)> {
    let keep_a: Vec<char> = lb.iter().chain(later).copied().collect();
    let keep_b: Vec<char> = la.iter().chain(later).copied().collect();
    let (a, la) = sum_labels(a, la, &keep_a)?;
    let (b, lb) = sum_labels(b, lb, &keep_b)?;
    let batch: Vec<char> = la
        .iter()
        .copied()
        .filter(|c| lb.contains(c) && later.contains(c))
        .collect();
    let con: Vec<char> = la
        .iter()
        .copied()
        .filter(|c| lb.contains(c) && !later.contains(c))
        .collect();
    let fa: Vec<char> = la.iter().copied().filter(|c| !lb.contains(c)).collect();
    let fb: Vec<char> = lb.iter().copied().filter(|c| !la.contains(c)).collect();
    let pos = |l: &[char], c: &char| l.iter().position(|x| x == c).unwrap_or(0) as isize;
    let size = |arr: &Array, l: &[char], cs: &[char]| -> usize {
        cs.iter().map(|c| arr.shape()[pos(l, c) as usize]).product()
    };
    let (nb, nk, nm, nn) = (
        size(&a, &la, &batch),
        size(&a, &la, &con),
        size(&a, &la, &fa),
        size(&b, &lb, &fb),
    );
    let pa: Vec<isize> = batch
        .iter()
        .chain(&fa)
        .chain(&con)
        .map(|c| pos(&la, c))
        .collect();
    let pb: Vec<isize> = batch
        .iter()
        .chain(&con)
        .chain(&fb)
        .map(|c| pos(&lb, c))
        .collect();
    let a3 = super::reshape(&super::transpose(&a, Some(&pa))?, &[nb, nm, nk])?;
    let b3 = super::reshape(&super::transpose(&b, Some(&pb))?, &[nb, nk, nn])?;
    let r = matmul(&a3, &b3)?;
    let labels: Vec<char> = batch.iter().chain(&fa).chain(&fb).copied().collect();
    let shape: Vec<usize> = batch
        .iter()
        .chain(&fa)
        .map(|c| a.shape()[pos(&la, c) as usize])
        .chain(fb.iter().map(|c| b.shape()[pos(&lb, c) as usize]))
        .collect();
    Ok((super::reshape(&r, &shape)?, labels))
}
