//! # tessera-io
//!
//! Model files: GGUF (llama.cpp), safetensors (Hugging Face) and NumPy `.npy`/`.npz`.
//!
//! Design: files are memory-mapped and tensors are arrays that view the map directly (no copy,
//! nothing read until a kernel touches it), kept alive by the arrays that use them. Parsers are
//! bounds-checked cursors: a malformed or truncated file is an [`Error`] naming the file, the
//! tensor or key, and the byte offset, never a panic or an allocation sized by untrusted input.

pub mod error;
pub mod gguf;
mod mapped;
pub mod npy;
pub mod safetensors;
mod zip;

pub use error::{Error, Result};
pub use mapped::Bytes;
