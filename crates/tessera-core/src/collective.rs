//! Collectives as graph primitives: the contract between the core and the communication
//! backends.
//!
//! The core knows nothing about sockets or MPI. A backend (the TCP ring, MPI, later NCCL; all in
//! `tessera-distributed`) implements [`Communicator`] on raw bytes, and a [`GroupRef`] to it rides
//! inside [`Primitive::Collective`](crate::Primitive::Collective) nodes. When such a node is
//! evaluated the CPU backend hands the communicator contiguous bytes; gradients and vmap rules
//! are ordinary ops (`ops::all_sum`, `ops::all_gather`, ...), so transforms compose through
//! collectives like through any other op.
//!
//! Ordering: every rank of a group must evaluate the group's collectives in the same order (as
//! in MPI and MLX). Evaluation is deterministic (a depth-first topological order of the graph),
//! so ranks that build the same graph agree.

use crate::dtype::Dtype;
use crate::error::Result;
use std::fmt;
use std::sync::Arc;

/// The element-wise reduction of an all-reduce or reduce-scatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CollectiveReduce {
    Sum,
    Max,
    Min,
}

/// One collective operation, as stored in a graph node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CollectiveOp {
    /// Element-wise reduction of the input over all ranks; every rank gets the result.
    AllReduce(CollectiveReduce),
    /// Concatenation of every rank's input along axis 0, in rank order.
    AllGather,
    /// Element-wise sum over ranks, then rank `r` keeps the `r`-th of `size` equal blocks along
    /// axis 0.
    SumScatter,
    /// Sends the input to rank `dst`; the output is the input (so later work can depend on it).
    Send { dst: usize },
    /// Receives an array of the node's shape and dtype from rank `src`. Its inputs, if any, only
    /// order the receive after them.
    Recv { src: usize },
}

impl CollectiveOp {
    /// The user-facing op name, used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            CollectiveOp::AllReduce(CollectiveReduce::Sum) => "all_sum",
            CollectiveOp::AllReduce(CollectiveReduce::Max) => "all_max",
            CollectiveOp::AllReduce(CollectiveReduce::Min) => "all_min",
            CollectiveOp::AllGather => "all_gather",
            CollectiveOp::SumScatter => "sum_scatter",
            CollectiveOp::Send { .. } => "send",
            CollectiveOp::Recv { .. } => "recv",
        }
    }
}

/// A group of processes that can run collectives: implemented by each communication backend.
///
/// All buffers are raw bytes of `dtype` elements in row-major order. Implementations must give
/// every rank bit-identical results (reduce in the same order everywhere), fail with
/// [`Error::Distributed`](crate::Error::Distributed) naming the rank at fault rather than hang,
/// and accept being called from any thread (one collective at a time per group).
pub trait Communicator: Send + Sync {
    /// This process's rank in the group, `0..size`.
    fn rank(&self) -> usize;
    /// The number of ranks in the group.
    fn size(&self) -> usize;
    /// The backend's name (`ring`, `mpi`, ...), for messages.
    fn backend(&self) -> &str;
    /// Reduces `data` element-wise over all ranks, in place.
    fn all_reduce(&self, op: CollectiveReduce, dtype: Dtype, data: &mut [u8]) -> Result<()>;
    /// Writes every rank's `input` (all the same length) into `output`, in rank order.
    fn all_gather(&self, input: &[u8], output: &mut [u8]) -> Result<()>;
    /// Reduces `input` over all ranks and writes this rank's block (`input.len() / size` bytes,
    /// block `rank`) into `output`.
    fn reduce_scatter(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<()>;
    /// Sends `data` to rank `dst` (which must post a matching `recv`).
    fn send(&self, data: &[u8], dst: usize) -> Result<()>;
    /// Receives exactly `data.len()` bytes from rank `src`.
    fn recv(&self, data: &mut [u8], src: usize) -> Result<()>;
    /// How data reaches rank `peer`, for diagnostics (`tessera cluster check`).
    fn transport(&self, _peer: usize) -> Transport {
        Transport::Unknown
    }
}

/// How a backend moves data to one peer (see [`Communicator::transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The backend does not say.
    #[default]
    Unknown,
    Tcp,
    SharedMemory,
    /// Shared memory, and large collectives read the peer's memory directly.
    SharedMemoryDirectReads,
    Mpi,
}

impl Transport {
    /// Every transport, in discriminant order (`ALL[t as usize] == t`).
    pub const ALL: [Transport; 5] = [
        Transport::Unknown,
        Transport::Tcp,
        Transport::SharedMemory,
        Transport::SharedMemoryDirectReads,
        Transport::Mpi,
    ];

    /// The name `tessera cluster check` prints.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Unknown => "-",
            Transport::Tcp => "tcp",
            Transport::SharedMemory => "shared memory",
            Transport::SharedMemoryDirectReads => "shared memory + direct reads",
            Transport::Mpi => "mpi",
        }
    }
}

/// A shared handle to a [`Communicator`]; equal when it is the same group object.
#[derive(Clone)]
pub struct GroupRef(pub Arc<dyn Communicator>);

impl GroupRef {
    pub fn rank(&self) -> usize {
        self.0.rank()
    }
    pub fn size(&self) -> usize {
        self.0.size()
    }
}

impl PartialEq for GroupRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Group({}, rank {} of {})",
            self.0.backend(),
            self.0.rank(),
            self.0.size()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Transport;

    #[test]
    fn transports_are_listed_in_discriminant_order() {
        for (i, &t) in Transport::ALL.iter().enumerate() {
            assert_eq!(t as usize, i, "{t:?}");
        }
    }
}
