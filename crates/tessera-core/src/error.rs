//! The core error type. Variants carry the op name and the offending shapes or dtypes, so a
//! message reads like `[matmul] inner dimensions differ: (2, 3) @ (4, 5)`.

use crate::dtype::Dtype;

/// Errors from building or evaluating arrays.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    /// Arguments of an op are inconsistent (shapes, axes, values).
    #[error("[{op}] {msg}")]
    Invalid { op: &'static str, msg: String },
    /// Shapes cannot be broadcast together.
    #[error(
        "[{op}] shapes {} and {} cannot be broadcast",
        fmt_shape(a),
        fmt_shape(b)
    )]
    Broadcast {
        op: &'static str,
        a: Vec<usize>,
        b: Vec<usize>,
    },
    /// An op does not accept this dtype.
    #[error("[{op}] unsupported dtype {dtype}: {msg}")]
    Dtype {
        op: &'static str,
        dtype: Dtype,
        msg: String,
    },
    /// An allocation would exceed the memory limit or failed.
    #[error(
        "out of memory: requested {requested} bytes with {active} active and a limit of {limit} (free arrays, call clear_cache, or raise set_memory_limit)"
    )]
    OutOfMemory {
        requested: usize,
        active: usize,
        limit: usize,
    },
    /// A collective failed: a peer was lost, timed out, refused the handshake or sent a
    /// malformed frame. The message names the rank and its address.
    #[error("[{op}] {msg}")]
    Distributed { op: &'static str, msg: String },
    /// The backend has no kernel for this primitive.
    #[error("[{backend}] no kernel for {primitive}")]
    Unsupported {
        backend: &'static str,
        primitive: String,
    },
}

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for an [`Error::Invalid`].
pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid {
        op,
        msg: msg.into(),
    })
}

/// Formats a shape the way NumPy prints it: `(2, 3)`, `(5,)`, `()`.
pub fn fmt_shape(shape: &[usize]) -> String {
    match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
