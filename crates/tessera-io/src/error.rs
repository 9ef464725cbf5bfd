//! Errors for model files. Every message says which file, which tensor or key, and at which byte
//! offset a malformed file went wrong, so a user can tell a truncated download from a bug.

use std::path::PathBuf;

/// Errors from reading or writing model files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused (missing file, permissions, disk full).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not follow the format.
    #[error(
        "malformed {format} file{}: {msg} (at byte offset {offset})",
        path_suffix(path)
    )]
    Format {
        format: &'static str,
        path: Option<PathBuf>,
        offset: u64,
        msg: String,
    },
    /// A tensor is missing or cannot be used as asked.
    #[error("tensor '{name}': {msg}")]
    Tensor { name: String, msg: String },
    /// A metadata key is missing or has the wrong type.
    #[error("metadata '{key}': {msg}")]
    Metadata { key: String, msg: String },
    /// An array operation failed.
    #[error(transparent)]
    Core(#[from] tessera_core::Error),
}

fn path_suffix(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

/// Result with the io [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Attaches a path to a format error that was raised while parsing bytes.
    pub(crate) fn with_path(self, p: &std::path::Path) -> Error {
        match self {
            Error::Format {
                format,
                path: None,
                offset,
                msg,
            } => Error::Format {
                format,
                path: Some(p.to_path_buf()),
                offset,
                msg,
            },
            e => e,
        }
    }
}
