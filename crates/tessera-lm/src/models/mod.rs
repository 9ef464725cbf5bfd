//! Reading each family's configuration from the files that describe it.

pub mod gguf;
pub mod hf;
