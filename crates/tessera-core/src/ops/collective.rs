//! Collective ops over a group of processes: lazy nodes like any other op, with gradients
//! (`all_sum` ↔ `all_sum`, `all_gather` ↔ `sum_scatter`) and vmap rules.
//!
//! A group of size 1 makes every reduction and gather the identity (no node is built), so code
//! written for a cluster runs unchanged on one machine. Groups come from `tessera-distributed`
//! (`tessera_distributed::init`); these functions take its [`GroupRef`].

use crate::array::Array;
use crate::collective::{CollectiveOp, CollectiveReduce, GroupRef};
use crate::dtype::Dtype;
use crate::error::{Result, fmt_shape, invalid};
use crate::primitive::Primitive;

fn node(
    op: CollectiveOp,
    group: &GroupRef,
    inputs: impl IntoIterator<Item = Array>,
    shape: impl crate::layout::IntoDims,
    dt: Dtype,
) -> Array {
    Array::lazy(
        Primitive::Collective {
            op,
            group: group.clone(),
        },
        inputs,
        shape,
        dt,
    )
}

fn all_reduce(x: &Array, group: &GroupRef, op: CollectiveReduce) -> Result<Array> {
    if group.size() == 1 {
        return Ok(x.clone());
    }
    Ok(node(
        CollectiveOp::AllReduce(op),
        group,
        [x.clone()],
        x.shape(),
        x.dtype(),
    ))
}

/// Element-wise sum of `x` over all ranks of `group`; every rank gets the same result (bit for
/// bit: the backends reduce in one order for everyone). Any dtype; bool sums are logical or.
/// The gradient of `all_sum` is the `all_sum` of the cotangents.
pub fn all_sum(x: &Array, group: &GroupRef) -> Result<Array> {
    all_reduce(x, group, CollectiveReduce::Sum)
}

/// Element-wise maximum of `x` over all ranks of `group`.
pub fn all_max(x: &Array, group: &GroupRef) -> Result<Array> {
    all_reduce(x, group, CollectiveReduce::Max)
}

/// Element-wise minimum of `x` over all ranks of `group`.
pub fn all_min(x: &Array, group: &GroupRef) -> Result<Array> {
    all_reduce(x, group, CollectiveReduce::Min)
}

/// Concatenates every rank's `x` along axis 0, in rank order: shape `(size * d0, ...)`. All
/// ranks must pass the same shape and dtype; a scalar is gathered into shape `(size,)`.
pub fn all_gather(x: &Array, group: &GroupRef) -> Result<Array> {
    let x = if x.ndim() == 0 {
        crate::ops::reshape(x, &[1])?
    } else {
        x.clone()
    };
    if group.size() == 1 {
        return Ok(x);
    }
    let mut shape = x.shape().to_vec();
    shape[0] *= group.size();
    Ok(node(
        CollectiveOp::AllGather,
        group,
        vec![x.clone()],
        shape,
        x.dtype(),
    ))
}

/// Sums `x` over all ranks, then rank `r` keeps block `r` of `size` equal blocks along axis 0
/// (reduce-scatter). `x.shape[0]` must be a multiple of the group size.
pub fn sum_scatter(x: &Array, group: &GroupRef) -> Result<Array> {
    let n = group.size();
    if x.ndim() == 0 || !x.shape()[0].is_multiple_of(n) {
        return invalid(
            "sum_scatter",
            format!(
                "axis 0 of {} must be a multiple of the group size {n}",
                fmt_shape(x.shape())
            ),
        );
    }
    if n == 1 {
        return Ok(x.clone());
    }
    let mut shape = x.shape().to_vec();
    shape[0] /= n;
    Ok(node(
        CollectiveOp::SumScatter,
        group,
        vec![x.clone()],
        shape,
        x.dtype(),
    ))
}

fn check_peer(op: &'static str, peer: usize, group: &GroupRef) -> Result<()> {
    if peer >= group.size() {
        return invalid(
            op,
            format!("rank {peer} is not in a group of size {}", group.size()),
        );
    }
    if peer == group.rank() {
        return invalid(op, format!("rank {peer} cannot exchange with itself"));
    }
    Ok(())
}

/// Sends `x` to rank `dst` of `group`, which must call [`recv`] (or [`recv_like`]) with the
/// same shape and dtype. Returns `x` itself once sent, so later work can depend on the send;
/// evaluate the result (or something that depends on it) or nothing is sent. In reverse mode the
/// gradient of `x` is received from `dst`, whose receive sends its cotangent back, and in
/// forward mode the tangent of `x` is sent along (pipeline stages: each rank differentiates its
/// own part, and both sides must differentiate).
pub fn send(x: &Array, dst: usize, group: &GroupRef) -> Result<Array> {
    check_peer("send", dst, group)?;
    Ok(node(
        CollectiveOp::Send { dst },
        group,
        vec![x.clone()],
        x.shape().to_vec(),
        x.dtype(),
    ))
}

/// Receives an array of `shape` and `dtype` from rank `src` of `group` (sent with [`send`]).
pub fn recv(shape: &[usize], dtype: Dtype, src: usize, group: &GroupRef) -> Result<Array> {
    check_peer("recv", src, group)?;
    Ok(node(
        CollectiveOp::Recv { src },
        group,
        Vec::new(),
        shape.to_vec(),
        dtype,
    ))
}

/// Receives an array shaped like `x` from rank `src`. The receive is ordered after `x` is
/// computed (useful for pipelines that alternate sends and receives).
pub fn recv_like(x: &Array, src: usize, group: &GroupRef) -> Result<Array> {
    check_peer("recv", src, group)?;
    Ok(node(
        CollectiveOp::Recv { src },
        group,
        vec![x.clone()],
        x.shape().to_vec(),
        x.dtype(),
    ))
}

/// Returns when every rank of `group` has reached the barrier (an all_sum of one byte,
/// evaluated at once).
pub fn barrier(group: &GroupRef) -> Result<()> {
    if group.size() == 1 {
        return Ok(());
    }
    let one = Array::from_slice(&[1u8], &[1])?;
    let done = all_sum(&one, group)?;
    // The node then holds the only handle: the sum runs in place, no copy first.
    drop(one);
    done.eval()
}
