//! GGUF, the llama.cpp model format (versions 2 and 3): a header, typed key/value metadata, a
//! tensor table, then aligned tensor data.
//!
//! [`GgufFile::open`] memory-maps the file and parses everything but the tensor data; tensors are
//! then viewed in place with no copy: dense types (F32, F16, BF16, F64, I8..I64) as arrays of the
//! matching dtype, block-quantized types as `u8` arrays of shape `[rows, row_bytes]` holding the
//! raw blocks, which the quantized matmul reads directly.
//!
//! GGUF stores dimensions fastest-first (`ne[0]` is the row length); [`TensorInfo::shape`] gives
//! them in row-major order, as every other tessera array.
//!
//! ```no_run
//! let f = tessera_io::gguf::GgufFile::open("model.gguf").unwrap();
//! println!("{}", f.metadata.str("general.architecture").unwrap());
//! for t in &f.tensors {
//!     println!("{} {:?} {}", t.name, t.shape, t.ggml_type);
//! }
//! ```

mod read;
pub mod value;
mod write;

pub use value::{Metadata, Value, ValueType};
pub use write::GgufWriter;

use crate::error::{Error, Result};
use crate::mapped::{self, Bytes};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tessera_core::quant::GgmlType;
use tessera_core::{Array, Dtype};

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Row-major shape (GGUF's dimension list reversed).
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Bytes of tensor data.
    pub nbytes: usize,
}

impl TensorInfo {
    /// Validates the geometry: rows are whole blocks, sizes do not overflow.
    pub(crate) fn new(
        name: String,
        ggml_dims: Vec<usize>,
        ggml_type: GgmlType,
        offset: u64,
    ) -> std::result::Result<TensorInfo, String> {
        let shape: Vec<usize> = ggml_dims.iter().rev().copied().collect();
        let row = ggml_dims.first().copied().unwrap_or(1);
        let rows = ggml_dims[1.min(ggml_dims.len())..]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        let row_bytes = ggml_type
            .row_bytes(row)
            .map_err(|e| format!("tensor '{name}': {e}"))?;
        let nbytes = rows
            .and_then(|r| r.checked_mul(row_bytes))
            .ok_or_else(|| format!("tensor '{name}' of shape {shape:?} is too large"))?;
        Ok(TensorInfo {
            name,
            shape,
            ggml_type,
            offset,
            nbytes,
        })
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The dtype a dense tensor maps to, `None` for block-quantized types.
    pub fn dense_dtype(&self) -> Option<Dtype> {
        Some(match self.ggml_type {
            GgmlType::F32 => Dtype::F32,
            GgmlType::F16 => Dtype::F16,
            GgmlType::BF16 => Dtype::BF16,
            GgmlType::F64 => Dtype::F64,
            GgmlType::I32 => Dtype::I32,
            GgmlType::I64 => Dtype::I64,
            _ => return None,
        })
    }
}

/// A parsed GGUF file whose tensor data stays in the (memory-mapped) file.
pub struct GgufFile {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: usize,
    data_offset: usize,
    bytes: Arc<Bytes>,
    index: HashMap<String, usize>,
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let bytes = Bytes::map(path)?;
        read::parse(bytes).map_err(|e| e.with_path(path))
    }

    /// Parses a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        read::parse(Arc::new(Bytes::Owned(bytes)))
    }

    fn indexed(mut self) -> GgufFile {
        self.index = self
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        self
    }

    /// The table entry for `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.info(name).ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            msg: "not in this GGUF file".into(),
        })
    }

    /// The raw bytes of a tensor (validated to lie inside the file when it was opened).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.require(name)?;
        let start = self.data_offset + t.offset as usize;
        Ok(&self.bytes.as_slice()[start..start + t.nbytes])
    }

    /// A tensor as an array viewing the file, with no copy.
    ///
    /// Dense types keep their dtype and shape. Block-quantized types become a `u8` array of shape
    /// `[rows, row_bytes]` (all leading dimensions flattened into rows); pair it with
    /// [`TensorInfo::ggml_type`] and the row length `shape.last()`.
    pub fn tensor(&self, name: &str) -> Result<Array> {
        let t = self.require(name)?;
        let start = self.data_offset + t.offset as usize;
        let (dtype, shape) = match t.dense_dtype() {
            Some(d) => (d, t.shape.clone()),
            None if !t.ggml_type.is_quantized() => {
                return Err(Error::Tensor {
                    name: name.into(),
                    msg: format!("{} tensors are not supported yet", t.ggml_type),
                });
            }
            None => {
                let row = t.shape.last().copied().unwrap_or(1);
                let row_bytes = t.ggml_type.row_bytes(row)?;
                (Dtype::U8, vec![t.nbytes / row_bytes.max(1), row_bytes])
            }
        };
        let aligned =
            (self.bytes.as_slice().as_ptr() as usize + start).is_multiple_of(dtype.size());
        let buffer = if aligned {
            mapped::view(&self.bytes, start, t.nbytes)
        } else {
            // Only possible for an in-memory file whose Vec is oddly placed: copy.
            let b = tessera_core::memory::Buffer::alloc(t.nbytes)?;
            // SAFETY: fresh buffer of t.nbytes; source range validated at open.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.bytes.as_slice()[start..].as_ptr(),
                    b.as_mut_ptr(),
                    t.nbytes,
                )
            };
            b
        };
        Ok(Array::from_buffer(Arc::new(buffer), dtype, &shape)?)
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.nbytes).sum()
    }
}
