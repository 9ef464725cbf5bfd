//! Read-only file bytes shared by every tensor viewing them: a memory map, or an owned vector
//! for bytes that came from elsewhere (tests, network). Arrays made from a file hold an `Arc` to
//! it, so the map lives exactly as long as some tensor still uses it.

use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use tessera_core::memory::Buffer;

/// The bytes of a model file.
pub enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Memory-maps `path` read-only.
    ///
    /// Like every mmap-based loader (llama.cpp, safetensors, MLX), this assumes nobody truncates
    /// or rewrites the file while it is mapped.
    pub fn map(path: &Path) -> Result<Arc<Bytes>> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            // Mapping a directory fails with ENODEV ("No such device"), which names nothing.
            return Err(io(std::io::Error::other(
                "a directory, where a file was expected",
            )));
        }
        let len = meta.len();
        if len == 0 {
            // A zero-length map is an error on some platforms; an empty file is simply empty.
            return Ok(Arc::new(Bytes::Owned(Vec::new())));
        }
        // SAFETY: read-only private map; see the note above about concurrent modification.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Arc::new(Bytes::Mapped(map)))
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A buffer viewing `range` of `bytes` without copying. The range must be in bounds (callers
/// validate it against the file size first).
pub(crate) fn view(bytes: &Arc<Bytes>, start: usize, len: usize) -> Buffer {
    let slice = &bytes.as_slice()[start..start + len];
    let owner: Arc<dyn std::any::Any + Send + Sync> = bytes.clone();
    // SAFETY: the bytes are immutable and `owner` keeps them alive as long as the buffer.
    unsafe { Buffer::from_external(slice.as_ptr(), len, owner) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_a_directory_says_so() {
        let dir = std::env::temp_dir();
        let e = Bytes::map(&dir)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("a directory, where a file was expected"), "{e}");
        assert!(e.contains(&dir.display().to_string()), "{e}");
    }
}
