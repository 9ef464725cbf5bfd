//! # tessera-lm
//!
//! The LLM runtime: tokenizers, chat templates, model architectures written once on shared
//! building blocks, KV caches, sampling and generation.
//!
//! - [`config::ModelConfig`] describes any supported family with a few switches; [`model::Model`]
//!   is the one transformer that reads them.
//! - Weights stay as the file holds them ([`weights::Weight`]): GGUF blocks are multiplied in
//!   place by the quantized matmul, dense tensors view the memory-mapped file.
//! - [`kv_cache::KvCache`] grows in steps and is updated in place.

pub mod attention;
pub mod chat_template;
pub mod config;
pub mod convert;
pub mod error;
pub mod gate_up;
pub mod generate;
pub mod kv_cache;
pub mod linear;
pub mod load;
pub mod model;
pub mod models;
pub mod rope;
pub mod sample;
pub mod stop;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
