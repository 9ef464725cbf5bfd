//! # tessera-core
//!
//! Lazy n-dimensional arrays, the op catalogue, evaluation, and the CPU backend.
//!
//! Design (see ARCHITECTURE.md at the repository root):
//! - An [`Array`] is a handle to one output of a graph node. Ops validate their inputs, compute
//!   the output shape and dtype at once, and build a node; nothing runs until [`eval`] (or
//!   `to_vec`, `item`, printing).
//! - A node holds a [`Primitive`] (a closed enum every backend matches exhaustively) and its
//!   inputs; once evaluated it keeps only its data, a shared buffer plus a strided layout, so
//!   views (transpose, slice, broadcast) never copy.
//! - Arrays have no device. Each node is put on a [`Stream`]; the CPU backend runs today, and a
//!   GPU backend plugs in through [`backend::register_backend`].
//! - Memory comes from a caching allocator with active/peak accounting and a settable limit;
//!   exceeding it is an error at `eval`, after which the process stays usable.
//!
//! ```
//! use tessera_core::{Array, ops};
//! let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
//! let b = ops::exp(&ops::matmul(&a, &a).unwrap()).unwrap(); // nothing computed yet
//! let s = ops::sum(&b, ops::Axes::All, false).unwrap();
//! assert!(s.item::<f32>().unwrap() > 0.0);                   // evaluated here
//! ```

pub mod array;
pub mod backend;
pub mod collective;
mod display;
pub mod dtype;
pub mod error;
pub mod layout;
pub mod memory;
pub mod ops;
pub mod primitive;
pub mod profile;
pub mod quant;
pub mod random;
pub mod stream;
pub mod transforms;

pub use array::Array;
pub use dtype::{Dtype, Element, promote_types};
pub use error::{Error, Result};
pub use memory::{
    active_memory, cache_memory, clear_cache, peak_memory, reset_peak_memory, set_cache_limit,
    set_memory_limit,
};
pub use primitive::{GateActivation, Primitive};
pub use stream::{
    Device, DeviceType, Stream, default_stream, set_default_device, set_default_stream, with_stream,
};
pub use transforms::{async_eval, eval, synchronize};

/// Re-exported so `dispatch_dtype!` works in downstream crates.
#[doc(hidden)]
pub use half;
