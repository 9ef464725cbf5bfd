//! Collective nodes on the CPU: make the data contiguous, then hand its bytes to the group's
//! communicator. All-reduce works in place on a donated input when it can (no copy at all),
//! and hands that input over as its output.

use super::copy::{contiguous, ensure_contiguous};
use crate::array::{Meta, Outputs};
use crate::backend::Delivered;
use crate::collective::{CollectiveOp, GroupRef};
use crate::error::Result;
use crate::layout::ArrayData;

fn bytes(x: &ArrayData) -> &[u8] {
    let n = x.size() * x.dtype.size();
    // SAFETY: `x` is row-major contiguous (callers ensure it): n bytes from its first element.
    unsafe { std::slice::from_raw_parts(x.ptr::<u8>(), n) }
}

#[allow(clippy::mut_from_ref)]
fn bytes_mut(x: &ArrayData) -> &mut [u8] {
    let n = x.size() * x.dtype.size();
    // SAFETY: `x` is a fresh or donated row-major buffer nobody else reads while we write.
    unsafe { std::slice::from_raw_parts_mut(x.mut_ptr::<u8>(), n) }
}

pub(super) fn run(
    op: CollectiveOp,
    group: &GroupRef,
    inputs: &[ArrayData],
    out: &Meta,
    results: &mut Outputs,
) -> Result<Delivered> {
    let comm = &group.0;
    let input = |i: usize| {
        inputs.get(i).ok_or_else(|| crate::Error::Invalid {
            op: op.name(),
            msg: format!("missing input {i}"),
        })
    };
    let o = match op {
        CollectiveOp::AllReduce(r) => {
            let x = input(0)?;
            if x.is_donatable() {
                comm.all_reduce(r, x.dtype, bytes_mut(x))?;
                return Ok(Delivered::InPlace(0));
            }
            let o = contiguous(x)?;
            comm.all_reduce(r, o.dtype, bytes_mut(&o))?;
            o
        }
        CollectiveOp::AllGather => {
            let x = ensure_contiguous(input(0)?)?;
            let o = ArrayData::alloc(out.dtype, &out.shape)?;
            comm.all_gather(bytes(&x), bytes_mut(&o))?;
            o
        }
        CollectiveOp::SumScatter => {
            let x = ensure_contiguous(input(0)?)?;
            let o = ArrayData::alloc(out.dtype, &out.shape)?;
            comm.reduce_scatter(
                crate::collective::CollectiveReduce::Sum,
                x.dtype,
                bytes(&x),
                bytes_mut(&o),
            )?;
            o
        }
        CollectiveOp::Send { dst } => {
            let x = input(0)?;
            let c = ensure_contiguous(x)?;
            comm.send(bytes(&c), dst)?;
            x.clone()
        }
        CollectiveOp::Recv { src } => {
            let o = ArrayData::alloc(out.dtype, &out.shape)?;
            comm.recv(bytes_mut(&o), src)?;
            o
        }
    };
    results.push(o);
    Ok(Delivered::Pushed)
}
