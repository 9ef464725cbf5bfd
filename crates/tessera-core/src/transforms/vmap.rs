//! Vectorising map: `vmap(f, in_axes, out_axes)` runs `f` once on per-example tracers, then
//! replays the graph it built with every node batched (its batch dimension at axis 0), using one
//! batching rule per primitive. Nodes that do not depend on a batched input are reused as they
//! are (broadcast where needed). Because `grad` builds ordinary graph nodes, `vmap` of `grad`
//! works by the same replay.

use super::node_key as key;
use crate::array::{Array, Node};
use crate::error::{Error, Result, fmt_shape};
use crate::ops;
use crate::primitive::Primitive;
use std::collections::HashMap;

/// Maps `f` over axis `in_axes[i]` of each input (`None`: not mapped, passed whole) and stacks the
/// results along `out_axes[j]` of each output.
/// ```
/// use tessera_core::{Array, ops, transforms::vmap};
/// let x = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
/// // Per row: the sum of squares.
/// let r = vmap(|a| Ok(vec![ops::sum(&ops::square(&a[0])?, 0, false)?]), &[x], &[Some(0)], &[0]).unwrap();
/// assert_eq!(r[0].to_vec::<f32>().unwrap(), vec![14.0, 77.0]);
/// ```
pub fn vmap(
    f: impl FnOnce(&[Array]) -> Result<Vec<Array>>,
    inputs: &[Array],
    in_axes: &[Option<isize>],
    out_axes: &[isize],
) -> Result<Vec<Array>> {
    if in_axes.len() != inputs.len() {
        return Err(Error::Invalid {
            op: "vmap",
            msg: format!("{} in_axes for {} inputs", in_axes.len(), inputs.len()),
        });
    }
    // Batched inputs with the mapped axis moved to 0, and per-example tracers.
    let mut batch: Option<usize> = None;
    let mut batched: HashMap<*const Node, Array> = HashMap::new();
    let mut tracers = Vec::with_capacity(inputs.len());
    for (x, ax) in inputs.iter().zip(in_axes) {
        match ax {
            None => tracers.push(x.clone()),
            Some(ax) => {
                let xb = ops::moveaxis(x, *ax, 0)?;
                let b = xb.shape()[0];
                if batch.is_some_and(|n| n != b) {
                    return Err(Error::Invalid {
                        op: "vmap",
                        msg: format!("mapped axes differ in size: {} and {b}", batch.unwrap_or(0)),
                    });
                }
                batch = Some(b);
                let per = xb.shape()[1..].to_vec();
                // A per-example stand-in (the first example, or zeros for an empty batch): f only
                // builds a graph on it; the values used are the batched ones.
                let example = if b > 0 {
                    ops::reshape(&ops::slice_axis(&xb, 0, 0, 1)?, &per)?
                } else {
                    ops::zeros(&per, x.dtype())?
                };
                let t = Array::lazy(Primitive::Copy, vec![example], per, x.dtype());
                batched.insert(key(&t), xb);
                tracers.push(t);
            }
        }
    }
    let n = batch.ok_or_else(|| Error::Invalid {
        op: "vmap",
        msg: "no input is mapped".into(),
    })?;
    let outputs = f(&tracers)?;
    if out_axes.len() != outputs.len() {
        return Err(Error::Invalid {
            op: "vmap",
            msg: format!("{} out_axes for {} outputs", out_axes.len(), outputs.len()),
        });
    }
    // Topological order of the nodes built on the tracers.
    let mut order: Vec<Array> = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let mut stack: Vec<(Array, bool)> = outputs.iter().map(|o| (o.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        if expanded {
            order.push(a);
            continue;
        }
        if !visited.insert(key(&a)) || batched.contains_key(&key(&a)) {
            continue;
        }
        let inputs = a.node.lock().inputs.clone();
        stack.push((a, true));
        stack.extend(inputs.into_iter().map(|i| (i, false)));
    }
    for a in &order {
        let (primitive, ins) = {
            let st = a.node.lock();
            (st.primitive.clone(), st.inputs.clone())
        };
        let Some(p) = primitive else { continue };
        if !ins.iter().any(|i| batched.contains_key(&key(i))) {
            continue;
        }
        let bins: Vec<Option<Array>> = ins.iter().map(|i| batched.get(&key(i)).cloned()).collect();
        let out = batch_rule(&p, &ins, &bins, a, n)?;
        batched.insert(key(a), out);
    }
    outputs
        .iter()
        .zip(out_axes)
        .map(|(o, &ax)| {
            // An output not depending on any mapped input is the same for every example.
            let b = force(o, &batched.get(&key(o)).cloned(), n)?;
            ops::moveaxis(&b, 0, ax)
        })
        .collect()
}

/// `x` (per-example rank `rank`) as a batched array of shape [n, 1.., per-example shape] with
/// `out_rank` per-example dims, so it broadcasts against other batched operands.
fn lift(x: &Array, bx: &Option<Array>, n: usize, out_rank: usize) -> Result<Array> {
    match bx {
        Some(b) => {
            let per = &b.shape()[1..];
            let mut s = vec![n];
            s.extend(std::iter::repeat_n(1, out_rank.saturating_sub(per.len())));
            s.extend_from_slice(per);
            ops::reshape(b, &s)
        }
        None => Ok(x.clone()),
    }
}

/// `x` batched for sure: broadcast to [n, per-example shape] when it was not mapped.
fn force(x: &Array, bx: &Option<Array>, n: usize) -> Result<Array> {
    match bx {
        Some(b) => Ok(b.clone()),
        None => {
            let mut s = vec![n];
            s.extend_from_slice(x.shape());
            ops::broadcast_to(&ops::expand_dims(x, &[0])?, &s)
        }
    }
}

/// A window's start/step with the batch axis (axis 0) taken whole in front.
fn whole_batch_axis(start: &[usize], step: &[isize]) -> (Vec<usize>, Vec<isize>) {
    (
        std::iter::once(0).chain(start.iter().copied()).collect(),
        std::iter::once(1).chain(step.iter().copied()).collect(),
    )
}

fn batched_shape(n: usize, per: &[usize]) -> Vec<usize> {
    let mut s = vec![n];
    s.extend_from_slice(per);
    s
}

fn batch_rule(
    p: &Primitive,
    ins: &[Array],
    bins: &[Option<Array>],
    out: &Array,
    n: usize,
) -> Result<Array> {
    let out_shape = batched_shape(n, out.shape());
    let dt = out.dtype();
    let node = |p: Primitive, inputs: Vec<Array>| Array::lazy(p, inputs, out_shape.clone(), dt);
    let rank = out.ndim();
    let shift = |v: &[usize]| -> Vec<usize> { v.iter().map(|&a| a + 1).collect() };
    Ok(match p {
        Primitive::Unary(_)
        | Primitive::AsType(_)
        | Primitive::Copy
        | Primitive::StopGradient
        | Primitive::Softmax => node(p.clone(), vec![force(&ins[0], &bins[0], n)?]),
        Primitive::Binary(_) | Primitive::Select => {
            let lifted = ins
                .iter()
                .zip(bins)
                .map(|(x, b)| lift(x, b, n, rank))
                .collect::<Result<Vec<_>>>()?;
            node(p.clone(), lifted)
        }
        Primitive::Reshape(shape) => node(
            Primitive::Reshape(batched_shape(n, shape)),
            vec![force(&ins[0], &bins[0], n)?],
        ),
        Primitive::Transpose(perm) => {
            let mut q = vec![0usize];
            q.extend(shift(perm));
            node(Primitive::Transpose(q), vec![force(&ins[0], &bins[0], n)?])
        }
        Primitive::Broadcast(shape) => {
            let x = lift(&ins[0], &bins[0], n, shape.len())?;
            node(Primitive::Broadcast(batched_shape(n, shape)), vec![x])
        }
        Primitive::Slice { start, step } => {
            let (s, t) = whole_batch_axis(start, step);
            node(
                Primitive::Slice { start: s, step: t },
                vec![force(&ins[0], &bins[0], n)?],
            )
        }
        Primitive::SliceUpdate { start, step } => {
            let (s, t) = whole_batch_axis(start, step);
            node(
                Primitive::SliceUpdate { start: s, step: t },
                vec![force(&ins[0], &bins[0], n)?, force(&ins[1], &bins[1], n)?],
            )
        }
        Primitive::Reduce { op, axes } => node(
            Primitive::Reduce {
                op: *op,
                axes: shift(axes),
            },
            vec![force(&ins[0], &bins[0], n)?],
        ),
        Primitive::ArgReduce { op, axis } => node(
            Primitive::ArgReduce {
                op: *op,
                axis: axis + 1,
            },
            vec![force(&ins[0], &bins[0], n)?],
        ),
        Primitive::Scan {
            op,
            axis,
            reverse,
            inclusive,
        } => node(
            Primitive::Scan {
                op: *op,
                axis: axis + 1,
                reverse: *reverse,
                inclusive: *inclusive,
            },
            vec![force(&ins[0], &bins[0], n)?],
        ),
        Primitive::Sort { axis } => node(
            Primitive::Sort { axis: axis + 1 },
            vec![force(&ins[0], &bins[0], n)?],
        ),
        Primitive::ArgSort { axis } => node(
            Primitive::ArgSort { axis: axis + 1 },
            vec![force(&ins[0], &bins[0], n)?],
        ),
        Primitive::Concatenate { axis } => {
            let all = ins
                .iter()
                .zip(bins)
                .map(|(x, b)| force(x, b, n))
                .collect::<Result<Vec<_>>>()?;
            node(Primitive::Concatenate { axis: axis + 1 }, all)
        }
        Primitive::Take { axis } if bins[1].is_none() => node(
            Primitive::Take { axis: axis + 1 },
            vec![force(&ins[0], &bins[0], n)?, ins[1].clone()],
        ),
        Primitive::Collective { op, group } => collective_batch(*op, group, ins, bins, out, n)?,
        // Batched indices: one take per example, stacked (correct for any shapes; not fast).
        Primitive::Take { .. }
        | Primitive::Custom(_)
        | Primitive::Depends
        | Primitive::Fused(_) => per_example(p, ins, bins, out, n)?,
        Primitive::TakeAlong { axis } => {
            let (a, idx) = (force(&ins[0], &bins[0], n)?, force(&ins[1], &bins[1], n)?);
            node(Primitive::TakeAlong { axis: axis + 1 }, vec![a, idx])
        }
        Primitive::ScatterAlong { axis, mode } => {
            let all = ins
                .iter()
                .zip(bins)
                .map(|(x, b)| force(x, b, n))
                .collect::<Result<Vec<_>>>()?;
            node(
                Primitive::ScatterAlong {
                    axis: axis + 1,
                    mode: *mode,
                },
                all,
            )
        }
        // The batch is one more leading dim of x; a batched weight runs per example.
        Primitive::QuantizedMatmul { .. } | Primitive::GatedQuantizedMatmul { .. }
            if bins[1].is_none() =>
        {
            node(
                p.clone(),
                vec![force(&ins[0], &bins[0], n)?, ins[1].clone()],
            )
        }
        Primitive::QuantizedMatmul { .. } | Primitive::GatedQuantizedMatmul { .. } => {
            per_example(p, ins, bins, out, n)?
        }
        Primitive::Dequantize { .. } => node(p.clone(), vec![force(&ins[0], &bins[0], n)?]),
        // Batched ids alone: the output's leading axes are the ids' (the batch first).
        Primitive::QuantizedRows { .. } if bins[0].is_none() => node(
            p.clone(),
            vec![ins[0].clone(), force(&ins[1], &bins[1], n)?],
        ),
        Primitive::QuantizedRows { .. } => per_example(p, ins, bins, out, n)?,
        // Affine quantization works row by row over any leading dims: the batch is one more.
        Primitive::AffineQuantize { .. } => node(p.clone(), vec![force(&ins[0], &bins[0], n)?]),
        Primitive::AffineDequantize { .. } => {
            let all = ins
                .iter()
                .zip(bins)
                .map(|(x, b)| force(x, b, n))
                .collect::<Result<Vec<_>>>()?;
            node(p.clone(), all)
        }
        // x batched, weights shared: the batch is one more leading dim of x.
        Primitive::AffineQuantizedMatmul { .. } if bins[1..].iter().all(Option::is_none) => {
            let mut all = ins.to_vec();
            all[0] = force(&ins[0], &bins[0], n)?;
            node(p.clone(), all)
        }
        Primitive::AffineQuantizedMatmul { .. } => per_example(p, ins, bins, out, n)?,
        // x gains a leading batch axis; weights and tables shared by the batch stay as they are.
        Primitive::RmsNorm { .. } | Primitive::LayerNorm { .. } | Primitive::Rope { .. }
            if bins[1..].iter().all(Option::is_none) =>
        {
            let mut all = vec![force(&ins[0], &bins[0], n)?];
            all.extend(ins[1..].iter().cloned());
            node(p.clone(), all)
        }
        // The mapped axis joins the batch axis of q, k and v (a shared mask stays shared).
        Primitive::Sdpa { .. } if bins.get(3).is_none_or(Option::is_none) => {
            let fold = |i: usize| -> Result<Array> {
                let x = force(&ins[i], &bins[i], n)?;
                let s = x.shape();
                let mut folded = vec![s[0] * s[1]];
                folded.extend_from_slice(&s[2..]);
                ops::reshape(&x, &folded)
            };
            let mut all = vec![fold(0)?, fold(1)?, fold(2)?];
            all.extend(ins.get(3).cloned());
            let mut folded_out = vec![n * out.shape()[0]];
            folded_out.extend_from_slice(&out.shape()[1..]);
            let y = Array::lazy(p.clone(), all, folded_out, dt);
            ops::reshape(&y, &out_shape)?
        }
        Primitive::RmsNorm { .. }
        | Primitive::LayerNorm { .. }
        | Primitive::Rope { .. }
        | Primitive::Sdpa { .. } => per_example(p, ins, bins, out, n)?,
        Primitive::Matmul => {
            let (a, b) = (force(&ins[0], &bins[0], n)?, force(&ins[1], &bins[1], n)?);
            node(Primitive::Matmul, vec![a, b])
        }
        Primitive::Arange { .. } | Primitive::RandomBits => {
            return Err(Error::Invalid {
                op: "vmap",
                msg: format!(
                    "{p} of shape {} cannot depend on a mapped input",
                    fmt_shape(out.shape())
                ),
            });
        }
    })
}

/// The universal fallback: run the primitive once per example and stack the results.
/// Collectives on a batch: element-wise reductions and sends take the batch as is; gathers and
/// scatters work on axis 0, so the batch moves to axis 1 around them.
fn collective_batch(
    op: crate::collective::CollectiveOp,
    group: &crate::collective::GroupRef,
    ins: &[Array],
    bins: &[Option<Array>],
    out: &Array,
    n: usize,
) -> Result<Array> {
    use crate::collective::CollectiveOp::*;
    let x = || force(&ins[0], &bins[0], n);
    match op {
        AllReduce(_) | Send { .. } => Ok(Array::lazy(
            Primitive::Collective {
                op,
                group: group.clone(),
            },
            vec![x()?],
            batched_shape(n, out.shape()),
            out.dtype(),
        )),
        AllGather | SumScatter => {
            let inner = ops::swapaxes(&x()?, 0, 1)?;
            let y = if op == AllGather {
                ops::all_gather(&inner, group)?
            } else {
                ops::sum_scatter(&inner, group)?
            };
            ops::swapaxes(&y, 0, 1)
        }
        // A receive's only inputs order it; every example receives the same message.
        Recv { .. } => force(out, &None, n),
    }
}

fn per_example(
    p: &Primitive,
    ins: &[Array],
    bins: &[Option<Array>],
    out: &Array,
    n: usize,
) -> Result<Array> {
    let mut outs = Vec::with_capacity(n);
    for i in 0..n {
        let args = ins
            .iter()
            .zip(bins)
            .map(|(x, b)| match b {
                Some(b) => ops::reshape(&ops::slice_axis(b, 0, i, i + 1)?, x.shape()),
                None => Ok(x.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        outs.push(Array::lazy(
            p.clone(),
            args,
            out.shape().to_vec(),
            out.dtype(),
        ));
    }
    if outs.is_empty() {
        return ops::zeros(&batched_shape(0, out.shape()), out.dtype());
    }
    ops::stack(&outs, 0)
}
