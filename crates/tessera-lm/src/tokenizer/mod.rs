//! Tokenizers (placeholder; being written).
