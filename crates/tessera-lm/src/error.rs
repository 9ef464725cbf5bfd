//! The LLM runtime's error type: wraps core and file errors, and says what to do about a model
//! that cannot be used (unsupported architecture, missing tensor, inconsistent config).

/// Errors from loading or running a language model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] tessera_core::Error),
    #[error(transparent)]
    Io(#[from] tessera_io::Error),
    /// The model's configuration is missing something or is inconsistent.
    #[error("model config: {0}")]
    Config(String),
    /// The model uses something tessera does not support yet.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// Bad generation arguments (sampling parameters, prompt too long, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Result with the LM [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
