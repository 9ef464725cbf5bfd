//! # tessera-lm
//!
//! The LLM runtime: tokenizers, chat templates, model architectures written once on shared
//! building blocks, KV caches, sampling and generation.

pub mod tokenizer;
