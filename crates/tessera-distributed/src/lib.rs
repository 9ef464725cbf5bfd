//! # tessera-distributed
//!
//! Cluster mode: several processes (on one machine or many) working as one. A [`Group`] runs
//! collectives (`all_sum`, `all_gather`, `sum_scatter`, `send`, `recv`, ...) that are ordinary
//! lazy ops in the graph, with gradients and vmap rules, so a model can be split across machines
//! and trained or run like a local one.
//!
//! Design:
//! - The core defines the [`Communicator`](tessera_core::collective::Communicator) contract on
//!   raw bytes; this crate implements it. Backends: `ring` (TCP, built in, the default), `mpi`
//!   (the system's MPI, cargo feature `mpi`); NCCL would plug into the same trait.
//! - Every pair of ranks shares TCP connections, each authenticated by an HMAC-SHA256
//!   challenge-response on the cluster secret and optionally encrypted with ChaCha20-Poly1305.
//!   Frames carry group ids, sequence numbers, lengths and checksums, so a desynchronised or
//!   corrupted stream is an error, never wrong data.
//! - A lost, hung or misbehaving peer fails the collective on every rank within the timeout,
//!   with the rank and address at fault: the first rank to notice tells all others and closes
//!   its connections.
//! - The launcher ([`launch`]) starts ranks locally or over ssh and hands each its rank, the
//!   hosts and the secret through the environment; [`init`] reads them.
//!
//! ```no_run
//! use tessera_core::{Array, ops};
//! use tessera_distributed::{Backend, init};
//! // Started by `tessera launch -n 3 -- my-program`: each rank contributes its rank.
//! let group = init(Backend::Any)?;
//! let x = Array::from_slice(&[group.rank() as f32], &[1])?;
//! let total = group.all_sum(&x)?; // 0 + 1 + 2 on every rank
//! assert_eq!(total.item::<f32>()?, 3.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The MPI backend (`Backend::Mpi`, over the system's MPI) is built with the cargo feature `mpi`.
//!
//! Ranks on the same host exchange data through shared memory (`TESSERA_SHM=0` keeps them on
//! TCP); the TCP connection stays open beside it for aborts and liveness.
//!
//! Between hosts, each pair of ranks has `TESSERA_CONNECTIONS` TCP connections (default 2) and
//! messages of 1 MiB or more are split across them.
//!
//! Not built yet: gradients through `send`/`recv`, model-sharding helpers.

mod auth;
pub mod bind;
pub mod check;
mod checksum;
mod cma;
pub mod config;
mod error;
mod group;
pub mod launch;
mod link;
mod mesh;
#[cfg(feature = "mpi")]
mod mpi;
mod reduce;
mod ring;
mod shm;

pub use config::ClusterConfig;
pub use error::{Error, Result};
pub use group::{Backend, Group, init, init_with};
