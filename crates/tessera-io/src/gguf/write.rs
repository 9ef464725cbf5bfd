//! Writing GGUF version 3 files: metadata of every value type, the tensor table, and aligned data.

use super::value::{Metadata, Value};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;
use tessera_core::quant::GgmlType;

struct PendingTensor {
    name: String,
    shape: Vec<usize>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes a GGUF v3 file.
///
/// ```
/// use tessera_io::gguf::{GgufFile, GgufWriter, Value};
/// use tessera_core::quant::GgmlType;
/// let mut w = GgufWriter::new();
/// w.metadata.insert("general.architecture", Value::String("llama".into()));
/// let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
/// w.add_tensor("w", &[2, 2], GgmlType::F32, bytes).unwrap();
/// let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
/// assert_eq!(f.info("w").unwrap().shape, vec![2, 2]);
/// ```
pub struct GgufWriter {
    pub metadata: Metadata,
    pub alignment: usize,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            metadata: Metadata::new(),
            alignment: 32,
            tensors: Vec::new(),
        }
    }

    /// Adds a tensor of row-major `shape` whose bytes are already in `ggml_type`'s layout.
    pub fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> Result<()> {
        if ggml_type.id().is_none() {
            return Err(Error::Tensor {
                name: name.into(),
                msg: format!(
                    "{ggml_type} is tessera's in-memory layout and has no GGUF type; write the \
                     {} matrix it was made from",
                    ggml_type.file_format()
                ),
            });
        }
        let dims: Vec<usize> = shape.iter().rev().copied().collect();
        let info = super::TensorInfo::new(name.to_string(), dims, ggml_type, 0).map_err(|msg| {
            Error::Tensor {
                name: name.into(),
                msg,
            }
        })?;
        if info.nbytes != data.len() {
            return Err(Error::Tensor {
                name: name.into(),
                msg: format!(
                    "{} bytes given, shape {shape:?} of {ggml_type} needs {}",
                    data.len(),
                    info.nbytes
                ),
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(Error::Tensor {
                name: name.into(),
                msg: "added twice".into(),
            });
        }
        self.tensors.push(PendingTensor {
            name: name.into(),
            shape: shape.to_vec(),
            ggml_type,
            data,
        });
        Ok(())
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out).map_err(|source| Error::Io {
            path: "<memory>".into(),
            source,
        })?;
        Ok(out)
    }

    /// Writes the file to `path` (through a temporary file, renamed at the end, so a failure
    /// never leaves a half-written model under the final name).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tmp = path.with_extension("gguf.partial");
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        self.write_to(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let align = self.alignment.max(1);
        let mut meta = self.metadata.clone();
        if align != 32 {
            meta.insert("general.alignment", Value::U32(align as u32));
        }
        // The header (with the tensor table) is small: build it in memory, then stream the data.
        let mut h: Vec<u8> = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in meta.iter() {
            h.extend_from_slice(&encode_string(k));
            h.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            encode_value(v, &mut h);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            h.extend_from_slice(&encode_string(&t.name));
            h.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                h.extend_from_slice(&(d as u64).to_le_bytes());
            }
            // add_tensor admits file types only, which all have an id.
            h.extend_from_slice(&t.ggml_type.id().unwrap_or(u32::MAX).to_le_bytes());
            h.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len()).div_ceil(align) * align;
        }
        h.resize(h.len().div_ceil(align) * align, 0);
        w.write_all(&h)?;
        let mut written = 0usize;
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            w.write_all(&vec![0u8; off - written])?;
            w.write_all(&t.data)?;
            written = off + t.data.len();
        }
        Ok(())
    }
}

fn encode_string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => out.extend_from_slice(&encode_string(s)),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(ty, items) => {
            out.extend_from_slice(&(*ty as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                encode_value(it, out);
            }
        }
    }
}
