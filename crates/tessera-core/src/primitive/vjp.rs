//! Reverse-mode rules: for each primitive, the cotangents of its inputs given the cotangent of
//! its output. Written with the public ops, so the result is itself a lazy graph that can be
//! differentiated again (grad of grad).
//!
//! Inputs that cannot carry a gradient (integer or bool arrays, indices, random keys) get `None`.

use super::{BinaryOp, Primitive, ReduceOp, ScanOp, ScatterMode, UnaryOp};
use crate::array::Array;
use crate::error::Result;
use crate::ops::{self, Axes};

fn scalar(v: f64, like: &Array) -> Array {
    Array::scalar_of(v, like.dtype())
}

/// Sums `ct` down to `shape` (undoes broadcasting).
pub(crate) fn unbroadcast(ct: &Array, shape: &[usize]) -> Result<Array> {
    if ct.shape() == shape {
        return Ok(ct.clone());
    }
    let extra = ct.ndim() - shape.len();
    let mut axes: Vec<isize> = (0..extra as isize).collect();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && ct.shape()[extra + i] != 1 {
            axes.push((extra + i) as isize);
        }
    }
    let s = ops::sum(ct, Axes::Some(axes), true)?;
    ops::reshape(&s, shape)
}

fn differentiable(a: &Array) -> bool {
    a.dtype().is_float()
}

fn unary_vjp(op: UnaryOp, x: &Array, out: &Array, ct: &Array) -> Result<Option<Array>> {
    use UnaryOp::*;
    let one = || scalar(1.0, x);
    let g = match op {
        Abs => ops::multiply(ct, &ops::sign(x)?)?,
        Neg => ops::negative(ct)?,
        Sign | Floor | Ceil | Round => ops::zeros_like(x)?,
        Exp => ops::multiply(ct, out)?,
        Expm1 => ops::multiply(ct, &ops::add(out, &one())?)?,
        Log => ops::divide(ct, x)?,
        Log1p => ops::divide(ct, &ops::add(x, &one())?)?,
        Log2 => ops::divide(ct, &ops::multiply(x, &scalar(std::f64::consts::LN_2, x))?)?,
        Sqrt => ops::divide(ct, &ops::multiply(out, &scalar(2.0, x))?)?,
        Rsqrt => ops::multiply(ct, &ops::multiply(&scalar(-0.5, x), &ops::divide(out, x)?)?)?,
        Square => ops::multiply(ct, &ops::multiply(x, &scalar(2.0, x))?)?,
        Reciprocal => ops::negative(&ops::multiply(ct, &ops::square(out)?)?)?,
        Sin => ops::multiply(ct, &ops::cos(x)?)?,
        Cos => ops::negative(&ops::multiply(ct, &ops::sin(x)?)?)?,
        Tan => ops::multiply(ct, &ops::add(&one(), &ops::square(out)?)?)?,
        Tanh => ops::multiply(ct, &ops::subtract(&one(), &ops::square(out)?)?)?,
        Sinh => ops::multiply(ct, &ops::cosh(x)?)?,
        Cosh => ops::multiply(ct, &ops::sinh(x)?)?,
        Asin => ops::multiply(ct, &ops::rsqrt(&ops::subtract(&one(), &ops::square(x)?)?)?)?,
        Acos => ops::negative(&ops::multiply(
            ct,
            &ops::rsqrt(&ops::subtract(&one(), &ops::square(x)?)?)?,
        )?)?,
        Atan => ops::divide(ct, &ops::add(&one(), &ops::square(x)?)?)?,
        Sigmoid => ops::multiply(ct, &ops::multiply(out, &ops::subtract(&one(), out)?)?)?,
        Erf => {
            let k = scalar(std::f64::consts::FRAC_2_SQRT_PI, x);
            ops::multiply(
                ct,
                &ops::multiply(&k, &ops::exp(&ops::negative(&ops::square(x)?)?)?)?,
            )?
        }
        Erfinv => {
            let k = scalar(std::f64::consts::PI.sqrt() / 2.0, x);
            ops::multiply(ct, &ops::multiply(&k, &ops::exp(&ops::square(out)?)?)?)?
        }
        IsNan | IsInf | LogicalNot | BitwiseNot => return Ok(None),
    };
    Ok(Some(g))
}

fn binary_vjp(
    op: BinaryOp,
    a: &Array,
    b: &Array,
    out: &Array,
    ct: &Array,
) -> Result<[Option<Array>; 2]> {
    use BinaryOp::*;
    let (ga, gb) = match op {
        Add => (ct.clone(), ct.clone()),
        Sub => (ct.clone(), ops::negative(ct)?),
        Mul => (ops::multiply(ct, b)?, ops::multiply(ct, a)?),
        Div => (
            ops::divide(ct, b)?,
            ops::negative(&ops::divide(&ops::multiply(ct, out)?, b)?)?,
        ),
        Pow => {
            // d/da a^b = b a^(b-1); d/db a^b = a^b log a (taken as 0 where a == 0).
            let ga = ops::multiply(
                ct,
                &ops::multiply(b, &ops::power(a, &ops::subtract(b, &scalar(1.0, b))?)?)?,
            )?;
            let safe_log = ops::where_(
                &ops::equal(a, &scalar(0.0, a))?,
                &scalar(0.0, a),
                &ops::log(a)?,
            )?;
            (ga, ops::multiply(ct, &ops::multiply(out, &safe_log)?)?)
        }
        Max | Min => {
            // The winner takes the gradient; ties split it evenly.
            let (win_a, win_b) = if op == Max {
                (ops::greater(a, b)?, ops::less(a, b)?)
            } else {
                (ops::less(a, b)?, ops::greater(a, b)?)
            };
            let tie = ops::equal(a, b)?;
            let half = ops::multiply(ct, &scalar(0.5, ct))?;
            let zero = scalar(0.0, ct);
            let ga = ops::where_(&win_a, ct, &ops::where_(&tie, &half, &zero)?)?;
            let gb = ops::where_(&win_b, ct, &ops::where_(&tie, &half, &zero)?)?;
            (ga, gb)
        }
        Atan2 => {
            let d = ops::add(&ops::square(a)?, &ops::square(b)?)?;
            (
                ops::divide(&ops::multiply(ct, b)?, &d)?,
                ops::negative(&ops::divide(&ops::multiply(ct, a)?, &d)?)?,
            )
        }
        LogAddExp => (
            ops::multiply(ct, &ops::sigmoid(&ops::subtract(a, b)?)?)?,
            ops::multiply(ct, &ops::sigmoid(&ops::subtract(b, a)?)?)?,
        ),
        Rem => (
            ct.clone(),
            ops::negative(&ops::multiply(ct, &ops::floor_divide(a, b)?)?)?,
        ),
        FloorDiv => (ops::zeros_like(a)?, ops::zeros_like(b)?),
        Eq | Ne | Lt | Le | Gt | Ge | LogicalAnd | LogicalOr | BitAnd | BitOr | BitXor | Shl
        | Shr => {
            return Ok([None, None]);
        }
    };
    Ok([
        Some(unbroadcast(&ga, a.shape())?),
        Some(unbroadcast(&gb, b.shape())?),
    ])
}

/// Cotangents for `inputs` of a node computing `out` with `p`, given the output cotangent `ct`.
pub(crate) fn vjp(
    p: &Primitive,
    inputs: &[Array],
    out: &Array,
    ct: &Array,
) -> Result<Vec<Option<Array>>> {
    let x = || inputs[0].clone();
    let grads: Vec<Option<Array>> = match p {
        Primitive::Unary(op) => vec![unary_vjp(*op, &x(), out, ct)?],
        Primitive::Binary(op) => binary_vjp(*op, &inputs[0], &inputs[1], out, ct)?.into(),
        Primitive::Select => {
            let zero = scalar(0.0, ct);
            let gx = ops::where_(&inputs[0], ct, &zero)?;
            let gy = ops::where_(&inputs[0], &zero, ct)?;
            vec![
                None,
                Some(unbroadcast(&gx, inputs[1].shape())?),
                Some(unbroadcast(&gy, inputs[2].shape())?),
            ]
        }
        Primitive::AsType(_) => vec![Some(ct.astype(x().dtype())?)],
        Primitive::Copy => vec![Some(ct.clone())],
        Primitive::Depends => std::iter::once(Some(ct.clone()))
            .chain(std::iter::repeat_n(None, inputs.len() - 1))
            .collect(),
        Primitive::Arange { .. } | Primitive::RandomBits | Primitive::StopGradient => {
            vec![None; inputs.len()]
        }
        Primitive::Reshape(_) => vec![Some(ops::reshape(ct, x().shape())?)],
        Primitive::Transpose(perm) => {
            let mut inv = vec![0isize; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i as isize;
            }
            vec![Some(ops::transpose(ct, Some(&inv))?)]
        }
        Primitive::Broadcast(_) => vec![Some(unbroadcast(ct, x().shape())?)],
        Primitive::Slice { start, step } => {
            let z = ops::zeros_like(&x())?;
            let g = Array::lazy(
                Primitive::SliceUpdate {
                    start: start.clone(),
                    step: step.clone(),
                },
                vec![z, ct.clone()],
                x().shape().to_vec(),
                x().dtype(),
            );
            vec![Some(g)]
        }
        Primitive::SliceUpdate { start, step } => {
            let window = Array::lazy(
                Primitive::Slice {
                    start: start.clone(),
                    step: step.clone(),
                },
                vec![ct.clone()],
                inputs[1].shape().to_vec(),
                ct.dtype(),
            );
            // The update may have been written converted: its gradient in its own dtype.
            let window = if window.dtype() == inputs[1].dtype() {
                window
            } else {
                ops::astype(&window, inputs[1].dtype())?
            };
            let zeros = ops::zeros_like(&inputs[1])?;
            let ga = Array::lazy(
                Primitive::SliceUpdate {
                    start: start.clone(),
                    step: step.clone(),
                },
                vec![ct.clone(), zeros],
                ct.shape().to_vec(),
                ct.dtype(),
            );
            vec![Some(ga), Some(window)]
        }
        Primitive::Reduce { op, axes: _ } => {
            let xs = x();
            let g = match op {
                ReduceOp::Sum => ops::broadcast_to(ct, xs.shape())?,
                ReduceOp::Prod => {
                    ops::multiply(&ops::broadcast_to(ct, xs.shape())?, &ops::divide(out, &xs)?)?
                }
                ReduceOp::Max | ReduceOp::Min => {
                    let mask = ops::equal(&xs, out)?.astype(xs.dtype())?;
                    let axes: Vec<isize> = (0..xs.ndim())
                        .filter(|&i| out.shape()[i] == 1 && xs.shape()[i] != 1)
                        .map(|i| i as isize)
                        .collect();
                    let count = ops::sum(&mask, Axes::Some(axes), true)?;
                    ops::multiply(&ops::divide(&mask, &count)?, ct)?
                }
                ReduceOp::All | ReduceOp::Any => return Ok(vec![None]),
            };
            vec![Some(g)]
        }
        Primitive::ArgReduce { .. } | Primitive::ArgSort { .. } => vec![None],
        Primitive::Scan {
            op,
            axis,
            reverse,
            inclusive,
        } => match op {
            ScanOp::Sum => {
                let g = Array::lazy(
                    Primitive::Scan {
                        op: ScanOp::Sum,
                        axis: *axis,
                        reverse: !reverse,
                        inclusive: *inclusive,
                    },
                    vec![ct.clone()],
                    ct.shape().to_vec(),
                    ct.dtype(),
                );
                vec![Some(g)]
            }
            ScanOp::Prod => {
                // For a forward inclusive scan, g[i] = E[i] S[i] with E the exclusive product
                // and S[i] = ct[i] + x[i+1] S[i+1] (a linear recurrence run from the other end):
                // no division by x, so zeros are exact. An exclusive scan first moves the
                // cotangent back one place (the transpose of its shift).
                let xs = x();
                let (axis, reverse) = (*axis, *reverse);
                let ct = if *inclusive {
                    ct.clone()
                } else {
                    super::jvp::shift(ct, 1, axis, 0.0, reverse)?
                };
                let excl = super::jvp::scan_node(ScanOp::Prod, &xs, axis, reverse, false);
                let next = super::jvp::shift(&xs, 1, axis, 0.0, reverse)?;
                let s = super::jvp::linear_recurrence(&next, &ct, axis, !reverse)?;
                vec![Some(ops::multiply(&excl, &s)?)]
            }
            ScanOp::Max | ScanOp::Min => {
                // Each output's cotangent goes to the element its value came from (at ties the
                // latest in scan order; the jvp takes the tangent from the same place).
                let xs = x();
                let (axis, reverse) = (*axis, *reverse);
                let (ct, y) = if *inclusive {
                    (ct.clone(), out.clone())
                } else {
                    (
                        super::jvp::shift(ct, 1, axis, 0.0, reverse)?,
                        super::jvp::scan_node(*op, &xs, axis, reverse, true),
                    )
                };
                let src = super::jvp::scan_source(&xs, &y, axis, reverse)?;
                vec![Some(ops::scatter_add_along_axis(
                    &ops::zeros_like(&xs)?,
                    &src,
                    &ct,
                    axis as isize,
                )?)]
            }
        },
        Primitive::Concatenate { axis } => {
            let mut at = 0usize;
            let mut gs = Vec::with_capacity(inputs.len());
            for i in inputs {
                let n = i.shape()[*axis];
                gs.push(Some(ops::slice_axis(ct, *axis, at, at + n)?));
                at += n;
            }
            gs
        }
        Primitive::Take { axis } => {
            let (a, idx) = (&inputs[0], &inputs[1]);
            let mut shape = a.shape()[..*axis].to_vec();
            shape.push(idx.size());
            shape.extend_from_slice(&a.shape()[axis + 1..]);
            let ct2 = ops::reshape(ct, &shape)?;
            let flat = ops::reshape(idx, &[idx.size()])?;
            vec![
                Some(ops::scatter_add(
                    &ops::zeros_like(a)?,
                    &flat,
                    &ct2,
                    *axis as isize,
                )?),
                None,
            ]
        }
        Primitive::TakeAlong { axis } => {
            let (a, idx) = (&inputs[0], &inputs[1]);
            let mut sa = ct.shape().to_vec();
            sa[*axis] = a.shape()[*axis];
            let z = ops::zeros(&sa, ct.dtype())?;
            let g = ops::scatter_add_along_axis(
                &z,
                &ops::broadcast_to(idx, ct.shape())?,
                ct,
                *axis as isize,
            )?;
            vec![Some(unbroadcast(&g, a.shape())?), None]
        }
        Primitive::ScatterAlong { axis, mode } => {
            let idx = &inputs[1];
            let ax = *axis as isize;
            let ga = match mode {
                ScatterMode::Set => ops::put_along_axis(ct, idx, &scalar(0.0, ct), ax)?,
                ScatterMode::Add => ct.clone(),
            };
            let gv = ops::take_along_axis(ct, idx, Some(ax))?;
            vec![Some(ga), None, Some(gv)]
        }
        Primitive::Matmul => {
            let (a, b) = (&inputs[0], &inputs[1]);
            let ga = ops::matmul(ct, &ops::swapaxes(b, -1, -2)?)?;
            // `x @ W.T` (a linear layer's weight stored (out, in)): the cotangent of the view
            // W.T is transposed back onto W by the view's own rule. Computed as (ctᵀ a)ᵀ, that
            // second transpose undoes the first and W's gradient comes out row-major, like W,
            // instead of a transposed view that every later element-wise op (the optimizer's
            // update) would walk column by column.
            let b_is_transposed = a.ndim() == 2
                && b.ndim() == 2
                && matches!(b.primitive(), Some(Primitive::Transpose(ref p)) if p[..] == [1, 0]);
            let gb = if b_is_transposed {
                let gw = ops::matmul(&ops::swapaxes(ct, -1, -2)?, a)?;
                ops::swapaxes(&gw, -1, -2)?
            } else {
                ops::matmul(&ops::swapaxes(a, -1, -2)?, ct)?
            };
            vec![Some(ga), Some(gb)]
        }
        Primitive::QuantizedMatmul { format } => {
            let (x, w) = (&inputs[0], &inputs[1]);
            let k = x.shape()[x.ndim() - 1];
            let dense = ops::astype(&ops::gguf_dequantize(w, *format, k)?, ct.dtype())?;
            vec![Some(ops::matmul(ct, &dense)?), None]
        }
        Primitive::GatedQuantizedMatmul { format, activation } => {
            // Through the composite (the whole product recomputed, then the activation).
            let (format, activation) = (*format, *activation);
            let w = inputs[1].clone();
            let (_, gs) = crate::transforms::vjp(
                |xs| {
                    Ok(vec![ops::gguf_gated_matmul_composite(
                        &xs[0], &w, format, activation,
                    )?])
                },
                &inputs[..1],
                std::slice::from_ref(ct),
            )?;
            vec![gs.into_iter().next(), None]
        }
        Primitive::Dequantize { .. } => vec![None],
        // Integer blocks and integer ids: nothing to differentiate.
        Primitive::QuantizedRows { .. } => vec![None, None],
        Primitive::AffineQuantize { .. } => vec![None],
        Primitive::AffineDequantize { group_size, bits } => {
            let [gs, gb] = affine_param_grads(ct, &inputs[0], &inputs[1], *group_size, *bits)?;
            vec![None, Some(gs), Some(gb)]
        }
        Primitive::AffineQuantizedMatmul {
            transpose,
            group_size,
            bits,
        } => {
            let (x, w_q, s, b) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
            // x @ Wᵀ pulls back through W, x @ W through Wᵀ: the same kernel, other transpose.
            let gx = ops::quantized_matmul(ct, w_q, s, b, !transpose, *group_size, *bits)?;
            // dW as a dense matrix (only evaluated when scales or biases are differentiated).
            let (k, n) = (x.shape()[x.ndim() - 1], ct.shape()[ct.ndim() - 1]);
            let rows: usize = x.shape()[..x.ndim() - 1].iter().product();
            let x2 = ops::reshape(x, &[rows, k])?;
            let ct2 = ops::reshape(ct, &[rows, n])?;
            let dw = if *transpose {
                ops::matmul(&ops::swapaxes(&ct2, 0, 1)?, &x2)?
            } else {
                ops::matmul(&ops::swapaxes(&x2, 0, 1)?, &ct2)?
            };
            let [gs, gb] = affine_param_grads(&dw, w_q, s, *group_size, *bits)?;
            vec![Some(gx), None, Some(gs), Some(gb)]
        }
        Primitive::LayerNorm { eps, weight, bias } => {
            layer_norm_vjp(*eps, *weight, *bias, inputs, ct)?
        }
        Primitive::RmsNorm { eps } => {
            // y = x r w with r = (mean(x²) + eps)^-1/2:
            // dx = r (g w) - x r³ mean((g w) x),  dw = Σ_rows g x r.
            let x = &inputs[0];
            let w = inputs.get(1);
            let ms = ops::mean(&ops::square(x)?, -1, true)?;
            let r = ops::rsqrt(&ops::add(&ms, &scalar(*eps, &ms))?)?;
            let gw = match w {
                Some(w) => ops::multiply(ct, w)?,
                None => ct.clone(),
            };
            let m = ops::mean(&ops::multiply(&gw, x)?, -1, true)?;
            let r3 = ops::multiply(&r, &ops::square(&r)?)?;
            let gx = ops::subtract(
                &ops::multiply(&gw, &r)?,
                &ops::multiply(x, &ops::multiply(&r3, &m)?)?,
            )?;
            let mut grads = vec![Some(gx)];
            if let Some(w) = w {
                let xr = ops::multiply(x, &r)?;
                grads.push(Some(unbroadcast(&ops::multiply(ct, &xr)?, w.shape())?));
            }
            grads
        }
        Primitive::Sdpa { scale } => {
            // Differentiate the matmul formulation (recomputed from the inputs).
            let scale = *scale;
            let with_mask = inputs.len() == 4;
            let (_, gs) = crate::transforms::vjp(
                |xs| {
                    let m = if with_mask { Some(&xs[3]) } else { None };
                    Ok(vec![ops::sdpa_composite(&xs[0], &xs[1], &xs[2], scale, m)?])
                },
                inputs,
                std::slice::from_ref(ct),
            )?;
            // The mask's gradient too (summed over its broadcast axes by the composite's own
            // rules); like every cotangent it is only evaluated when the mask is differentiated.
            gs.into_iter().map(Some).collect()
        }
        Primitive::Rope { interleaved } => {
            // A rotation: its transpose rotates by the opposite angle.
            let neg = ops::negative(&inputs[2])?;
            let gx = ops::rope(ct, &inputs[1], &neg, *interleaved)?;
            // The tables' gradients from the composite (built lazily: evaluated only when the
            // tables are differentiated).
            let interleaved = *interleaved;
            let (_, gs) = crate::transforms::vjp(
                |xs| {
                    Ok(vec![ops::rope_composite(
                        &inputs[0],
                        &xs[0],
                        &xs[1],
                        interleaved,
                    )?])
                },
                &inputs[1..3],
                std::slice::from_ref(ct),
            )?;
            let mut gs = gs.into_iter();
            vec![Some(gx), gs.next(), gs.next()]
        }
        Primitive::Softmax => {
            let s = ops::sum(&ops::multiply(ct, out)?, -1, true)?;
            vec![Some(ops::multiply(out, &ops::subtract(ct, &s)?)?)]
        }
        Primitive::Fused(prog) => {
            let prog = prog.0.clone();
            let (_, gs) = crate::transforms::vjp(
                |xs| Ok(vec![crate::transforms::expand_fused(&prog, xs)?]),
                inputs,
                std::slice::from_ref(ct),
            )?;
            gs.into_iter().map(Some).collect()
        }
        Primitive::Collective { op, group } => collective_vjp(*op, group, inputs, out, ct)?,
        Primitive::Custom(op) => match op.0.vjp(inputs, out, ct) {
            Some(gs) => gs?.into_iter().map(Some).collect(),
            None => {
                let f = op.0.clone();
                // Recompute from inputs that depend on the cotangent, so the recomputation runs
                // only once the backward pass reaches this op (not all at the start).
                let waited: Vec<Array> = inputs
                    .iter()
                    .map(|i| crate::transforms::depends(i, std::slice::from_ref(ct)))
                    .collect();
                let (_, gs) = crate::transforms::vjp(
                    |xs| Ok(vec![f.forward(xs)?]),
                    &waited,
                    std::slice::from_ref(ct),
                )?;
                gs.into_iter().map(Some).collect()
            }
        },
        Primitive::Sort { axis } => {
            let xs = x();
            let perm = ops::argsort(&xs, Some(*axis as isize))?;
            let z = ops::zeros_like(&xs)?;
            vec![Some(ops::scatter_add_along_axis(
                &z,
                &perm,
                ct,
                *axis as isize,
            )?)]
        }
    };
    // Only float inputs carry gradients.
    Ok(grads
        .into_iter()
        .zip(inputs)
        .map(|(g, i)| g.filter(|_| differentiable(i)))
        .collect())
}

/// Collectives, with the loss taken as the sum of every rank's loss (data parallelism): the
/// gradient of an input collects the cotangents of every rank's output that it reached.
/// The normalised rows of layer norm and the reciprocal deviation `r = (var + eps)^-1/2`.
pub(crate) fn layer_norm_parts(x: &Array, eps: f64) -> Result<(Array, Array)> {
    let d = ops::subtract(x, &ops::mean(x, -1, true)?)?;
    let var = ops::mean(&ops::square(&d)?, -1, true)?;
    let r = ops::rsqrt(&ops::add(&var, &scalar(eps, &var))?)?;
    Ok((ops::multiply(&d, &r)?, r))
}

/// y = x̂ w + b with x̂ = (x - mean) r: dx = r (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)) with ĝ = g w,
/// dw = Σ_rows g x̂, db = Σ_rows g.
fn layer_norm_vjp(
    eps: f64,
    weight: bool,
    bias: bool,
    inputs: &[Array],
    ct: &Array,
) -> Result<Vec<Option<Array>>> {
    let x = &inputs[0];
    let (xh, r) = layer_norm_parts(x, eps)?;
    let gh = if weight {
        ops::multiply(ct, &inputs[1])?
    } else {
        ct.clone()
    };
    let inner = ops::subtract(
        &ops::subtract(&gh, &ops::mean(&gh, -1, true)?)?,
        &ops::multiply(&xh, &ops::mean(&ops::multiply(&gh, &xh)?, -1, true)?)?,
    )?;
    let mut grads = vec![Some(ops::multiply(&r, &inner)?)];
    let d = [x.shape()[x.ndim() - 1]];
    if weight {
        grads.push(Some(unbroadcast(&ops::multiply(ct, &xh)?, &d)?));
    }
    if bias {
        grads.push(Some(unbroadcast(ct, &d)?));
    }
    Ok(grads)
}

fn collective_vjp(
    op: crate::collective::CollectiveOp,
    group: &crate::collective::GroupRef,
    inputs: &[Array],
    out: &Array,
    ct: &Array,
) -> Result<Vec<Option<Array>>> {
    use crate::collective::{CollectiveOp::*, CollectiveReduce};
    // Point-to-point messages, transposed: the receiver sends its cotangent back, the sender
    // receives it. (recv has no input, or recv_like's template, which gets no gradient.)
    match op {
        Send { dst } => {
            // send returns x itself: the local cotangent plus what the receiver sends back,
            // received after the send itself (recv_like of the send's output waits for it).
            return Ok(vec![Some(ops::add(ct, &ops::recv_like(out, dst, group)?)?)]);
        }
        Recv { src } => {
            // Nothing downstream of this node needs the send: the backward pass keeps it and
            // makes every gradient it returns wait for it.
            crate::transforms::grad::side_effect(ops::send(ct, src, group)?);
            return Ok(vec![None; inputs.len()]);
        }
        _ => {}
    }
    let x = &inputs[0];
    Ok(match op {
        AllReduce(CollectiveReduce::Sum) => vec![Some(ops::all_sum(ct, group)?)],
        AllReduce(CollectiveReduce::Max | CollectiveReduce::Min) => {
            // The ranks holding the extreme value share the summed cotangent evenly (as the
            // binary maximum does for ties).
            let win = ops::equal(x, out)?.astype(ct.dtype())?;
            let count = ops::all_sum(&win, group)?;
            let total = ops::all_sum(ct, group)?;
            vec![Some(ops::divide(&ops::multiply(&total, &win)?, &count)?)]
        }
        // Rank r's block of every rank's output came from rank r: sum those cotangent blocks.
        AllGather => {
            let g = ops::sum_scatter(ct, group)?;
            vec![Some(ops::reshape(&g, x.shape())?)]
        }
        // Block b of the input went (summed) to rank b: its cotangent comes from rank b.
        SumScatter => vec![Some(ops::all_gather(ct, group)?)],
        Send { .. } | Recv { .. } => unreachable_p2p(),
    })
}

/// Send and Recv return before the match on the other collectives.
fn unreachable_p2p() -> Vec<Option<Array>> {
    Vec::new()
}

/// Gradients of `scales` and `biases` given the cotangent `dw` of the dequantized matrix
/// `W = scale * q + bias` (shape `(.., d)`): `Σ dw·q` and `Σ dw` over each group.
fn affine_param_grads(
    dw: &Array,
    w_q: &Array,
    scales: &Array,
    group_size: usize,
    bits: u32,
) -> Result<[Array; 2]> {
    let f32 = crate::dtype::Dtype::F32;
    let q = ops::dequantize(
        w_q,
        &ops::ones(scales.shape(), f32)?,
        &ops::zeros(scales.shape(), f32)?,
        group_size,
        bits,
    )?;
    let dw = dw.astype(f32)?;
    let mut grouped = dw.shape().to_vec();
    let d = grouped.pop().unwrap_or(0);
    grouped.extend([d / group_size, group_size]);
    let per_group = |a: &Array| -> Result<Array> {
        ops::sum(&ops::reshape(a, &grouped)?, -1, false)?.astype(scales.dtype())
    };
    Ok([per_group(&ops::multiply(&dw, &q)?)?, per_group(&dw)?])
}
