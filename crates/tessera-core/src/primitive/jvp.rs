//! Forward-mode rules: for each primitive, the tangent of its output given its inputs, its output
//! and the tangents of its inputs. Written with the public ops, so a tangent is itself a lazy
//! graph that every transform can work on again (jvp of jvp, vjp of jvp, vmap and compile of
//! jvp).
//!
//! A tangent is `Option<Array>`: `None` is a zero tangent, and terms that it would multiply are
//! not built at all. Outputs that cannot carry a tangent (integer or bool results, indices,
//! comparisons, random bits) get `None`. Where a derivative has a choice (ties of `maximum`,
//! `max`, `all_max`, sorts and cumulative extremes), the rule makes the same choice as the
//! reverse-mode rule in `vjp.rs`, so that `jvp` and `vjp` are transposes of each other.
//!
//! Structural primitives that are linear in their first input (views, `take`, sums, `cumsum`,
//! copies) apply the same primitive to the tangent.

use super::{BinaryOp, CustomRef, Primitive, ReduceOp, ScanOp, UnaryOp};
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::{self, Axes};

fn scalar(v: f64, like: &Array) -> Array {
    Array::scalar_of(v, like.dtype())
}

/// The tangent, or a zero of `like`'s shape and dtype (a broadcast scalar: no memory).
fn or_zeros(t: &Option<Array>, like: &Array) -> Result<Array> {
    match t {
        Some(t) => Ok(t.clone()),
        None => ops::zeros(like.shape(), like.dtype()),
    }
}

/// The sum of the terms that are present (`None` when none is).
fn sum_terms(terms: impl IntoIterator<Item = Option<Array>>) -> Result<Option<Array>> {
    let mut acc: Option<Array> = None;
    for t in terms.into_iter().flatten() {
        acc = Some(match acc {
            Some(a) => ops::add(&a, &t)?,
            None => t,
        });
    }
    Ok(acc)
}

/// `f(t)` when the tangent is present.
fn term(t: &Option<Array>, f: impl FnOnce(&Array) -> Result<Array>) -> Result<Option<Array>> {
    t.as_ref().map(f).transpose()
}

/// The node's own primitive applied to other inputs (the tangents of a primitive that is linear
/// in them), with the node's output shape.
fn same(p: &Primitive, inputs: Vec<Array>, out: &Array, dtype: Dtype) -> Array {
    Array::lazy(p.clone(), inputs, out.shape().to_vec(), dtype)
}

fn unary_jvp(op: UnaryOp, x: &Array, out: &Array, t: &Array) -> Result<Option<Array>> {
    use UnaryOp::*;
    let one = || scalar(1.0, x);
    let d = match op {
        Abs => ops::multiply(t, &ops::sign(x)?)?,
        Neg => ops::negative(t)?,
        Sign | Floor | Ceil | Round => return Ok(None),
        Exp => ops::multiply(t, out)?,
        Expm1 => ops::multiply(t, &ops::add(out, &one())?)?,
        Log => ops::divide(t, x)?,
        Log1p => ops::divide(t, &ops::add(x, &one())?)?,
        Log2 => ops::divide(t, &ops::multiply(x, &scalar(std::f64::consts::LN_2, x))?)?,
        Sqrt => ops::divide(t, &ops::multiply(out, &scalar(2.0, x))?)?,
        Rsqrt => ops::multiply(t, &ops::multiply(&scalar(-0.5, x), &ops::divide(out, x)?)?)?,
        Square => ops::multiply(t, &ops::multiply(x, &scalar(2.0, x))?)?,
        Reciprocal => ops::negative(&ops::multiply(t, &ops::square(out)?)?)?,
        Sin => ops::multiply(t, &ops::cos(x)?)?,
        Cos => ops::negative(&ops::multiply(t, &ops::sin(x)?)?)?,
        Tan => ops::multiply(t, &ops::add(&one(), &ops::square(out)?)?)?,
        Tanh => ops::multiply(t, &ops::subtract(&one(), &ops::square(out)?)?)?,
        Sinh => ops::multiply(t, &ops::cosh(x)?)?,
        Cosh => ops::multiply(t, &ops::sinh(x)?)?,
        Asin => ops::multiply(t, &ops::rsqrt(&ops::subtract(&one(), &ops::square(x)?)?)?)?,
        Acos => ops::negative(&ops::multiply(
            t,
            &ops::rsqrt(&ops::subtract(&one(), &ops::square(x)?)?)?,
        )?)?,
        Atan => ops::divide(t, &ops::add(&one(), &ops::square(x)?)?)?,
        Sigmoid => ops::multiply(t, &ops::multiply(out, &ops::subtract(&one(), out)?)?)?,
        Erf => {
            let k = scalar(std::f64::consts::FRAC_2_SQRT_PI, x);
            ops::multiply(
                t,
                &ops::multiply(&k, &ops::exp(&ops::negative(&ops::square(x)?)?)?)?,
            )?
        }
        Erfinv => {
            let k = scalar(std::f64::consts::PI.sqrt() / 2.0, x);
            ops::multiply(t, &ops::multiply(&k, &ops::exp(&ops::square(out)?)?)?)?
        }
        IsNan | IsInf | LogicalNot | BitwiseNot => return Ok(None),
    };
    Ok(Some(d))
}

fn binary_jvp(
    op: BinaryOp,
    a: &Array,
    b: &Array,
    out: &Array,
    ta: &Option<Array>,
    tb: &Option<Array>,
) -> Result<Option<Array>> {
    use BinaryOp::*;
    match op {
        Add => sum_terms([ta.clone(), tb.clone()]),
        Sub => sum_terms([ta.clone(), term(tb, ops::negative)?]),
        Mul => sum_terms([
            term(ta, |t| ops::multiply(t, b))?,
            term(tb, |t| ops::multiply(a, t))?,
        ]),
        Div => sum_terms([
            term(ta, |t| ops::divide(t, b))?,
            term(tb, |t| {
                ops::negative(&ops::divide(&ops::multiply(t, out)?, b)?)
            })?,
        ]),
        Pow => {
            // d(a^b) = b a^(b-1) da + a^b log(a) db (log a taken as 0 where a == 0, as the vjp).
            let da = term(ta, |t| {
                ops::multiply(
                    t,
                    &ops::multiply(b, &ops::power(a, &ops::subtract(b, &scalar(1.0, b))?)?)?,
                )
            })?;
            let db = term(tb, |t| {
                let safe_log = ops::where_(
                    &ops::equal(a, &scalar(0.0, a))?,
                    &scalar(0.0, a),
                    &ops::log(a)?,
                )?;
                ops::multiply(t, &ops::multiply(out, &safe_log)?)
            })?;
            sum_terms([da, db])
        }
        Max | Min => {
            // The winner's tangent; at a tie the mean of both (the vjp splits the cotangent
            // evenly); NaN comparisons (neither wins nor ties) give zero, as the vjp does.
            let (win_a, win_b) = if op == Max {
                (ops::greater(a, b)?, ops::less(a, b)?)
            } else {
                (ops::less(a, b)?, ops::greater(a, b)?)
            };
            let zero = scalar(0.0, out);
            let (za, zb) = (
                ta.clone().unwrap_or_else(|| zero.clone()),
                tb.clone().unwrap_or_else(|| zero.clone()),
            );
            let half = ops::multiply(&ops::add(&za, &zb)?, &scalar(0.5, out))?;
            let tie = ops::where_(&ops::equal(a, b)?, &half, &zero)?;
            Ok(Some(ops::where_(
                &win_a,
                &za,
                &ops::where_(&win_b, &zb, &tie)?,
            )?))
        }
        Atan2 => {
            // d atan2(a, b) = (b da - a db) / (a² + b²).
            let num = sum_terms([
                term(ta, |t| ops::multiply(t, b))?,
                term(tb, |t| ops::negative(&ops::multiply(t, a)?))?,
            ])?;
            let d = ops::add(&ops::square(a)?, &ops::square(b)?)?;
            num.map(|n| ops::divide(&n, &d)).transpose()
        }
        LogAddExp => sum_terms([
            term(ta, |t| {
                ops::multiply(t, &ops::sigmoid(&ops::subtract(a, b)?)?)
            })?,
            term(tb, |t| {
                ops::multiply(t, &ops::sigmoid(&ops::subtract(b, a)?)?)
            })?,
        ]),
        // a % b = a - b floor(a / b), with floor's derivative zero.
        Rem => sum_terms([
            ta.clone(),
            term(tb, |t| {
                ops::negative(&ops::multiply(t, &ops::floor_divide(a, b)?)?)
            })?,
        ]),
        // Piecewise constant.
        FloorDiv => Ok(None),
        Eq | Ne | Lt | Le | Gt | Ge | LogicalAnd | LogicalOr | BitAnd | BitOr | BitXor | Shl
        | Shr => Ok(None),
    }
}

/// `v` moved by `d` places along `axis`, with `fill` in the places left empty: toward the end
/// (`out[k] = v[k - d]`) or toward the start (`out[k] = v[k + d]`).
pub(crate) fn shift(
    v: &Array,
    d: usize,
    axis: usize,
    fill: f64,
    toward_end: bool,
) -> Result<Array> {
    let n = v.shape()[axis];
    if d >= n {
        return ops::full(v.shape(), fill, v.dtype());
    }
    let mut pad_shape = v.shape().to_vec();
    pad_shape[axis] = d;
    let pad = ops::full(&pad_shape, fill, v.dtype())?;
    let parts = if toward_end {
        [pad, ops::slice_axis(v, axis, 0, n - d)?]
    } else {
        [ops::slice_axis(v, axis, d, n)?, pad]
    };
    ops::concatenate(&parts, axis as isize)
}

/// Solves the first-order linear recurrence `h[k] = a[k] h[k-1] + b[k]` along `axis` with
/// `h[-1] = 0` (with `reverse`, `h[k] = a[k] h[k+1] + b[k]` from the end), as a
/// Hillis-Steele scan over the pairs `(a, b)`: `log2(n)` steps of element-wise ops, no division,
/// so zeros in `a` are exact. Cumulative products differentiate to such recurrences.
pub(crate) fn linear_recurrence(a: &Array, b: &Array, axis: usize, reverse: bool) -> Result<Array> {
    let n = a.shape()[axis];
    let (mut aa, mut bb) = (a.clone(), b.clone());
    let mut d = 1;
    while d < n {
        // Compose each segment with the one `d` places earlier: (a1, b1) then (a2, b2) is
        // (a1 a2, a2 b1 + b2); the identity (1, 0) pads the start.
        let b_prev = shift(&bb, d, axis, 0.0, !reverse)?;
        bb = ops::add(&ops::multiply(&aa, &b_prev)?, &bb)?;
        if 2 * d < n {
            let a_prev = shift(&aa, d, axis, 1.0, !reverse)?;
            aa = ops::multiply(&a_prev, &aa)?;
        }
        d *= 2;
    }
    Ok(bb)
}

/// For a cumulative max/min `y` (inclusive) of `x` along `axis`: the index each output took its
/// value from, as int32 of `x`'s shape. At ties it is the latest position (in scan order) where
/// the running extreme was reached; the vjp uses the same indices.
pub(crate) fn scan_source(x: &Array, y: &Array, axis: usize, reverse: bool) -> Result<Array> {
    let n = x.shape()[axis];
    let mut s = vec![1usize; x.ndim()];
    s[axis] = n;
    let pos = ops::reshape(&ops::arange(0.0, n as f64, 1.0, Dtype::I32)?, &s)?;
    let hit = ops::equal(x, y)?;
    // A position where the running extreme was (re)reached; the first position in scan order
    // always is, so the fill is never used there.
    let fill = if reverse { n.saturating_sub(1) } else { 0 };
    let cand = ops::where_(&hit, &pos, &Array::scalar(fill as i32))?;
    let cand = ops::broadcast_to(&cand, x.shape())?;
    if reverse {
        ops::cummin(&cand, Some(axis as isize), true, true)
    } else {
        ops::cummax(&cand, Some(axis as isize), false, true)
    }
}

/// The scan `op` over `x` with other flags, as a node.
pub(crate) fn scan_node(
    op: ScanOp,
    x: &Array,
    axis: usize,
    reverse: bool,
    inclusive: bool,
) -> Array {
    Array::lazy(
        Primitive::Scan {
            op,
            axis,
            reverse,
            inclusive,
        },
        vec![x.clone()],
        x.shape().to_vec(),
        x.dtype(),
    )
}

fn scan_jvp(
    p: &Primitive,
    x: &Array,
    out: &Array,
    t: &Array,
    (op, axis, reverse, inclusive): (ScanOp, usize, bool, bool),
) -> Result<Array> {
    match op {
        ScanOp::Sum => Ok(same(p, vec![t.clone()], out, t.dtype())),
        ScanOp::Prod => {
            // y[k] = y[k-1] x[k], so dy[k] = x[k] dy[k-1] + y[k-1] t[k]: a linear recurrence
            // whose coefficients are x and the exclusive product (no division by x).
            let excl = scan_node(ScanOp::Prod, x, axis, reverse, false);
            let d = linear_recurrence(x, &ops::multiply(&excl, t)?, axis, reverse)?;
            if inclusive {
                Ok(d)
            } else {
                shift(&d, 1, axis, 0.0, !reverse)
            }
        }
        ScanOp::Max | ScanOp::Min => {
            let y = if inclusive {
                out.clone()
            } else {
                scan_node(op, x, axis, reverse, true)
            };
            let src = scan_source(x, &y, axis, reverse)?;
            let d = ops::take_along_axis(t, &src, Some(axis as isize))?;
            if inclusive {
                Ok(d)
            } else {
                shift(&d, 1, axis, 0.0, !reverse)
            }
        }
    }
}

/// Product over `axes` (kept as size 1) of `x`: the tangent is `Σ_i t_i Π_{j≠i} x_j` per group,
/// with the product of the others taken from exclusive products from both ends (exact when some
/// `x_j` is zero).
fn prod_jvp(x: &Array, t: &Array, axes: &[usize], out: &Array) -> Result<Array> {
    let keep: Vec<usize> = (0..x.ndim()).filter(|i| !axes.contains(i)).collect();
    let perm: Vec<isize> = keep.iter().chain(axes).map(|&i| i as isize).collect();
    let m: usize = axes.iter().map(|&i| x.shape()[i]).product();
    let mut flat: Vec<usize> = keep.iter().map(|&i| x.shape()[i]).collect();
    flat.push(m);
    let last = flat.len() - 1;
    let group =
        |a: &Array| -> Result<Array> { ops::reshape(&ops::transpose(a, Some(&perm))?, &flat) };
    let (xg, tg) = (group(x)?, group(t)?);
    let before = scan_node(ScanOp::Prod, &xg, last, false, false);
    let after = scan_node(ScanOp::Prod, &xg, last, true, false);
    let others = ops::multiply(&before, &after)?;
    let d = ops::sum(&ops::multiply(&tg, &others)?, -1, false)?;
    ops::reshape(&d, out.shape())
}

fn reduce_jvp(
    p: &Primitive,
    op: ReduceOp,
    axes: &[usize],
    x: &Array,
    out: &Array,
    t: &Array,
) -> Result<Option<Array>> {
    let axes_i: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
    Ok(Some(match op {
        ReduceOp::Sum => same(p, vec![t.clone()], out, t.dtype()),
        ReduceOp::Prod => prod_jvp(x, t, axes, out)?,
        ReduceOp::Max | ReduceOp::Min => {
            // The mean tangent of the elements equal to the extreme (the vjp shares the
            // cotangent evenly among them).
            let mask = ops::equal(x, out)?.astype(t.dtype())?;
            let count = ops::sum(&mask, Axes::Some(axes_i.clone()), true)?;
            let s = ops::sum(&ops::multiply(&mask, t)?, Axes::Some(axes_i), true)?;
            ops::divide(&s, &count)?
        }
        ReduceOp::All | ReduceOp::Any => return Ok(None),
    }))
}

fn rms_norm_jvp(eps: f64, inputs: &[Array], tangents: &[Option<Array>]) -> Result<Option<Array>> {
    // y = x r w with r = (mean(x²) + eps)^-1/2, so
    // dy = w (r dx - x r³ mean(x dx)) + x r dw.
    let x = &inputs[0];
    let w = inputs.get(1);
    let ms = ops::mean(&ops::square(x)?, -1, true)?;
    let r = ops::rsqrt(&ops::add(&ms, &scalar(eps, &ms))?)?;
    let dx = term(&tangents[0], |t| {
        let m = ops::mean(&ops::multiply(x, t)?, -1, true)?;
        let r3 = ops::multiply(&r, &ops::square(&r)?)?;
        let d = ops::subtract(
            &ops::multiply(t, &r)?,
            &ops::multiply(x, &ops::multiply(&r3, &m)?)?,
        )?;
        match w {
            Some(w) => ops::multiply(&d, w),
            None => Ok(d),
        }
    })?;
    let dw = match tangents.get(1) {
        Some(tw) => term(tw, |t| ops::multiply(&ops::multiply(x, &r)?, t))?,
        None => None,
    };
    sum_terms([dx, dw])
}

fn layer_norm_jvp(
    eps: f64,
    weight: bool,
    bias: bool,
    inputs: &[Array],
    tangents: &[Option<Array>],
) -> Result<Option<Array>> {
    // y = x̂ w + b with x̂ = (x - mean) r: dx̂ = r (dx - mean(dx) - x̂ mean(x̂ dx)), so
    // dy = w dx̂ + x̂ dw + db.
    let x = &inputs[0];
    let (xh, r) = super::vjp::layer_norm_parts(x, eps)?;
    let w = weight.then(|| &inputs[1]);
    let dx = term(&tangents[0], |t| {
        let c = ops::subtract(t, &ops::mean(t, -1, true)?)?;
        let m = ops::mean(&ops::multiply(&xh, t)?, -1, true)?;
        let dxh = ops::multiply(&r, &ops::subtract(&c, &ops::multiply(&xh, &m)?)?)?;
        match w {
            Some(w) => ops::multiply(&dxh, w),
            None => Ok(dxh),
        }
    })?;
    let dw = if weight {
        term(&tangents[1], |t| ops::multiply(&xh, t))?
    } else {
        None
    };
    let db = if bias {
        let at = 1 + weight as usize;
        term(&tangents[at], |t| ops::broadcast_to(t, x.shape()))?
    } else {
        None
    };
    sum_terms([dx, dw, db])
}

fn rope_jvp(
    interleaved: bool,
    inputs: &[Array],
    tangents: &[Option<Array>],
) -> Result<Option<Array>> {
    let (x, cos, sin) = (&inputs[0], &inputs[1], &inputs[2]);
    // A rotation of x: linear in x ...
    let dx = term(&tangents[0], |t| ops::rope(t, cos, sin, interleaved))?;
    // ... and linear in the tables on the rotated part (the tail beyond 2r passes x through,
    // so subtract the rope with zero tables, which is that tail alone).
    let dtab = if tangents[1].is_some() || tangents[2].is_some() {
        let tc = or_zeros(&tangents[1], cos)?;
        let ts = or_zeros(&tangents[2], sin)?;
        let with = ops::rope(x, &tc, &ts, interleaved)?;
        let tail = ops::rope(
            x,
            &ops::zeros(cos.shape(), cos.dtype())?,
            &ops::zeros(sin.shape(), sin.dtype())?,
            interleaved,
        )?;
        Some(ops::subtract(&with, &tail)?)
    } else {
        None
    };
    sum_terms([dx, dtab])
}

/// Tangent of a collective given the tangent `t` of its input (every rank takes part, so every
/// rank propagates its own tangent through the same exchange).
fn collective_jvp(
    op: crate::collective::CollectiveOp,
    group: &crate::collective::GroupRef,
    x: &Array,
    out: &Array,
    t: &Array,
) -> Result<Array> {
    use crate::collective::{CollectiveOp::*, CollectiveReduce};
    match op {
        AllReduce(CollectiveReduce::Sum) => ops::all_sum(t, group),
        AllReduce(CollectiveReduce::Max | CollectiveReduce::Min) => {
            // The mean tangent of the ranks holding the extreme (the transpose of the vjp,
            // which shares the summed cotangent evenly among them).
            let win = ops::equal(x, out)?.astype(t.dtype())?;
            let num = ops::all_sum(&ops::multiply(&win, t)?, group)?;
            ops::divide(&num, &ops::all_sum(&win, group)?)
        }
        AllGather => ops::all_gather(t, group),
        SumScatter => ops::sum_scatter(t, group),
        Send { .. } | Recv { .. } => Err(Error::Unsupported {
            backend: "jvp",
            primitive: format!(
                "{} (point-to-point messages are differentiated by the jvp walk, not by a rule)",
                op.name()
            ),
        }),
    }
}

/// A custom op: its own forward rule if it has one; else the transpose of its own VJP if it has
/// one (so forward and reverse mode agree with the derivative the user wrote, e.g. a
/// straight-through estimator); else forward mode through its `forward` (recomputed from the
/// inputs, as `checkpoint` does in reverse mode).
fn custom_jvp(
    op: &CustomRef,
    inputs: &[Array],
    out: &Array,
    tangents: &[Option<Array>],
) -> Result<Option<Array>> {
    if let Some(t) = op.0.jvp(inputs, out, tangents) {
        let t = t?;
        if t.shape() != out.shape() {
            return Err(Error::Invalid {
                op: "jvp",
                msg: format!(
                    "custom op {}: the jvp returned shape {} for an output of shape {}",
                    op.0.name(),
                    crate::error::fmt_shape(t.shape()),
                    crate::error::fmt_shape(out.shape())
                ),
            });
        }
        return Ok(Some(t));
    }
    let f = op.0.clone();
    if let Some(t) = crate::transforms::transpose_pullback(
        |u| f.vjp(inputs, out, u),
        op.0.name(),
        inputs,
        out,
        tangents,
    )? {
        return Ok(Some(t));
    }
    let (_, ts) = crate::transforms::jvp_partial(|xs| Ok(vec![f.forward(xs)?]), inputs, tangents)?;
    Ok(ts.into_iter().next().flatten())
}

/// Tangent of the output of a node computing `out` with `p` from `inputs`, given the inputs'
/// tangents (`None` = zero). `None` when the output's tangent is zero or it cannot carry one.
pub(crate) fn jvp(
    p: &Primitive,
    inputs: &[Array],
    out: &Array,
    tangents: &[Option<Array>],
) -> Result<Option<Array>> {
    if !out.dtype().is_float() || tangents.iter().all(Option::is_none) {
        return Ok(None);
    }
    let x = &inputs[0];
    // The tangent of input 0, for rules that only depend on it.
    let t0 = || tangents[0].clone();
    let t = match p {
        Primitive::Unary(op) => match t0() {
            Some(t) => unary_jvp(*op, x, out, &t)?,
            None => None,
        },
        Primitive::Binary(op) => binary_jvp(*op, x, &inputs[1], out, &tangents[0], &tangents[1])?,
        Primitive::Select => {
            let tx = or_zeros(&tangents[1], &inputs[1])?;
            let ty = or_zeros(&tangents[2], &inputs[2])?;
            Some(ops::where_(x, &tx, &ty)?)
        }
        Primitive::AsType(dt) => t0().map(|t| t.astype(*dt)).transpose()?,
        Primitive::Copy => t0(),
        // Only the first input is the value; the others order the evaluation.
        Primitive::Depends => t0(),
        Primitive::StopGradient | Primitive::Arange { .. } | Primitive::RandomBits => None,
        Primitive::Reshape(_)
        | Primitive::Transpose(_)
        | Primitive::Slice { .. }
        | Primitive::Broadcast(_) => t0().map(|t| same(p, vec![t.clone()], out, t.dtype())),
        Primitive::Reduce { op, axes } => match t0() {
            Some(t) => reduce_jvp(p, *op, axes, x, out, &t)?,
            None => None,
        },
        Primitive::ArgReduce { .. } | Primitive::ArgSort { .. } => None,
        Primitive::Scan {
            op,
            axis,
            reverse,
            inclusive,
        } => match t0() {
            Some(t) => Some(scan_jvp(p, x, out, &t, (*op, *axis, *reverse, *inclusive))?),
            None => None,
        },
        Primitive::Concatenate { axis } => {
            let parts = inputs
                .iter()
                .zip(tangents)
                .map(|(i, t)| or_zeros(t, i))
                .collect::<Result<Vec<_>>>()?;
            Some(ops::concatenate(&parts, *axis as isize)?)
        }
        Primitive::Take { .. } | Primitive::TakeAlong { .. } => {
            t0().map(|t| same(p, vec![t.clone(), inputs[1].clone()], out, t.dtype()))
        }
        // Linear in (a, values) jointly: the same scatter of the tangents (for `Set`, the
        // written places take the values' tangent, the others keep a's).
        Primitive::ScatterAlong { .. } => {
            let ta = or_zeros(&tangents[0], x)?;
            let tv = or_zeros(&tangents[2], &inputs[2])?;
            Some(same(p, vec![ta, inputs[1].clone(), tv], out, out.dtype()))
        }
        Primitive::SliceUpdate { .. } => {
            let ta = or_zeros(&tangents[0], x)?;
            let tu = or_zeros(&tangents[1], &inputs[1])?;
            Some(same(p, vec![ta, tu], out, out.dtype()))
        }
        Primitive::Matmul => {
            let (a, b) = (x, &inputs[1]);
            sum_terms([
                term(&tangents[0], |t| ops::matmul(t, b))?,
                term(&tangents[1], |t| ops::matmul(a, t))?,
            ])?
        }
        Primitive::QuantizedMatmul { format } => match t0() {
            // Linear in x; the derivative of the ideal product `x @ Wᵀ` (the kernel also rounds
            // x to 8 bits, which has no useful derivative), as the vjp does.
            Some(t) => {
                let k = x.shape()[x.ndim() - 1];
                let dense = ops::astype(&ops::gguf_dequantize(&inputs[1], *format, k)?, t.dtype())?;
                Some(ops::matmul(&t, &ops::swapaxes(&dense, -1, -2)?)?)
            }
            None => None,
        },
        Primitive::GatedQuantizedMatmul { format, activation } => match &tangents[0] {
            // Forward mode through the composite (the weight is a constant).
            Some(t) => {
                let (format, activation) = (*format, *activation);
                let w = inputs[1].clone();
                let (_, ts) = crate::transforms::jvp_partial(
                    |xs| {
                        Ok(vec![ops::gguf_gated_matmul_composite(
                            &xs[0], &w, format, activation,
                        )?])
                    },
                    &inputs[..1],
                    &[Some(t.clone())],
                )?;
                ts.into_iter().next().flatten()
            }
            None => None,
        },
        // Decoded from integer blocks: nothing to differentiate.
        Primitive::Dequantize { .. }
        | Primitive::QuantizedRows { .. }
        | Primitive::AffineQuantize { .. } => None,
        // `scale * q + bias` is linear in (scales, biases) jointly: dequantize their tangents.
        Primitive::AffineDequantize { .. } => {
            let ts = or_zeros(&tangents[1], &inputs[1])?;
            let tb = or_zeros(&tangents[2], &inputs[2])?;
            Some(same(p, vec![x.clone(), ts, tb], out, out.dtype()))
        }
        // `x @ W(s, b)ᵀ`: linear in x, and linear in (scales, biases) jointly, so both terms are
        // the same kernel (the quantized words are constants).
        Primitive::AffineQuantizedMatmul { .. } => {
            let (w_q, s, b) = (&inputs[1], &inputs[2], &inputs[3]);
            let dx = term(&tangents[0], |t| {
                Ok(same(
                    p,
                    vec![t.clone(), w_q.clone(), s.clone(), b.clone()],
                    out,
                    out.dtype(),
                ))
            })?;
            let dw = if tangents[2].is_some() || tangents[3].is_some() {
                let ts = or_zeros(&tangents[2], s)?;
                let tb = or_zeros(&tangents[3], b)?;
                Some(same(
                    p,
                    vec![x.clone(), w_q.clone(), ts, tb],
                    out,
                    out.dtype(),
                ))
            } else {
                None
            };
            sum_terms([dx, dw])?
        }
        Primitive::Softmax => match t0() {
            Some(t) => {
                let s = ops::sum(&ops::multiply(&t, out)?, -1, true)?;
                Some(ops::multiply(out, &ops::subtract(&t, &s)?)?)
            }
            None => None,
        },
        Primitive::RmsNorm { eps } => rms_norm_jvp(*eps, inputs, tangents)?,
        Primitive::LayerNorm { eps, weight, bias } => {
            layer_norm_jvp(*eps, *weight, *bias, inputs, tangents)?
        }
        Primitive::Rope { interleaved } => rope_jvp(*interleaved, inputs, tangents)?,
        Primitive::Sdpa { scale } => {
            // Forward mode through the matmul formulation (recomputed from the inputs; the mask
            // is differentiated too).
            let scale = *scale;
            let with_mask = inputs.len() == 4;
            let (_, ts) = crate::transforms::jvp_partial(
                |xs| {
                    let m = if with_mask { Some(&xs[3]) } else { None };
                    Ok(vec![ops::sdpa_composite(&xs[0], &xs[1], &xs[2], scale, m)?])
                },
                inputs,
                tangents,
            )?;
            ts.into_iter().next().flatten()
        }
        Primitive::Collective { op, group } => match t0() {
            Some(t) => Some(collective_jvp(*op, group, x, out, &t)?),
            None => None,
        },
        Primitive::Custom(op) => custom_jvp(op, inputs, out, tangents)?,
        // A node fused by `compile`: forward mode through its program written back as ops (the
        // same expansion its vjp and vmap use).
        Primitive::Fused(prog) => {
            let prog = prog.0.clone();
            let (_, ts) = crate::transforms::jvp_partial(
                |xs| Ok(vec![crate::transforms::expand_fused(&prog, xs)?]),
                inputs,
                tangents,
            )?;
            ts.into_iter().next().flatten()
        }
        // The tangent follows its element to its sorted place (the vjp scatters back through
        // the same permutation).
        Primitive::Sort { axis } => match t0() {
            Some(t) => {
                let perm = ops::argsort(x, Some(*axis as isize))?;
                Some(ops::take_along_axis(&t, &perm, Some(*axis as isize))?)
            }
            None => None,
        },
    };
    // Tangents live in the output's dtype and shape (a term may come from a broadcast operand).
    t.map(|t| {
        let t = t.astype(out.dtype())?;
        if t.shape() == out.shape() {
            Ok(t)
        } else {
            ops::broadcast_to(&t, out.shape())
        }
    })
    .transpose()
}
