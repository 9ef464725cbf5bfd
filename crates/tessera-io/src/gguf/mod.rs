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
    /// Which shard each tensor's data lives in (0: this file; k: `shards[k - 1]`), for models
    /// split across files by llama.cpp's `gguf-split`.
    shard_of: Vec<usize>,
    shards: Vec<Shard>,
}

/// Another file of a split model: its mapped bytes and where its tensor data starts.
struct Shard {
    bytes: Arc<Bytes>,
    data_offset: usize,
}

/// Splits `...-00001-of-00003.gguf` into (`...`, shard number, count).
fn split_name(path: &Path) -> Option<(String, usize, usize)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    if no.len() != 5 || count.len() != 5 {
        return None;
    }
    Some((prefix.to_string(), no.parse().ok()?, count.parse().ok()?))
}

impl GgufFile {
    /// Memory-maps and parses `path`. A model split by llama.cpp's `gguf-split`
    /// (`name-00001-of-00003.gguf`, ...) is opened whole from its first file: the other files
    /// are found next to it, checked, and their tensors join this one's.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let bytes = Bytes::map(path)?;
        let mut file = read::parse(bytes).map_err(|e| e.with_path(path))?;
        let count = file.split_key(path, "split.count")?.unwrap_or(1);
        if count > 1 {
            file.open_shards(path, count)?;
        }
        Ok(file)
    }

    fn split_key(&self, path: &Path, key: &str) -> Result<Option<usize>> {
        self.metadata.usize_opt(key).map_err(|e| Error::Metadata {
            key: key.into(),
            msg: format!("{}: {e}", path.display()),
        })
    }

    fn open_shards(&mut self, path: &Path, count: usize) -> Result<()> {
        let bad = |msg: String| Error::Metadata {
            key: "split.no".into(),
            msg,
        };
        let no = self.split_key(path, "split.no")?.unwrap_or(0);
        let (prefix, _, _) = split_name(path).ok_or_else(|| {
            bad(format!(
                "{} is part of a {count}-file split model but is not named NAME-00001-of-{count:05}.gguf, so its other files cannot be found",
                path.display()
            ))
        })?;
        if no != 0 {
            return Err(bad(format!(
                "{} is file {} of a split model: open the first one, {prefix}-00001-of-{count:05}.gguf",
                path.display(),
                no + 1
            )));
        }
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        for k in 1..count {
            let p = dir.join(format!(
                "{}-{:05}-of-{count:05}.gguf",
                Path::new(&prefix)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(&prefix),
                k + 1
            ));
            if !p.exists() {
                return Err(bad(format!(
                    "{} is missing: a split model needs all {count} files side by side",
                    p.display()
                )));
            }
            let part = read::parse(Bytes::map(&p)?).map_err(|e| e.with_path(&p))?;
            let (pno, pcount) = (
                part.split_key(&p, "split.no")?,
                part.split_key(&p, "split.count")?,
            );
            if pno != Some(k) || pcount != Some(count) {
                return Err(bad(format!(
                    "{} says it is file {:?} of {:?}, expected {} of {count}",
                    p.display(),
                    pno.map(|n| n + 1),
                    pcount,
                    k + 1
                )));
            }
            let shard = self.shards.len() + 1;
            for t in part.tensors {
                if self.index.contains_key(&t.name) {
                    return Err(Error::Tensor {
                        name: t.name.clone(),
                        msg: format!(
                            "appears in more than one file of the split ({})",
                            p.display()
                        ),
                    });
                }
                self.index.insert(t.name.clone(), self.tensors.len());
                self.tensors.push(t);
                self.shard_of.push(shard);
            }
            self.shards.push(Shard {
                bytes: part.bytes,
                data_offset: part.data_offset,
            });
        }
        if let Some(total) = self.split_key(path, "split.tensors.count")?
            && total != self.tensors.len()
        {
            return Err(bad(format!(
                "the split's {count} files hold {} tensors, the first file announces {total}",
                self.tensors.len()
            )));
        }
        Ok(())
    }

    /// The mapped bytes and data start of the file holding tensor `i`.
    fn data_of(&self, i: usize) -> (&Arc<Bytes>, usize) {
        match self.shard_of.get(i).copied().unwrap_or(0) {
            0 => (&self.bytes, self.data_offset),
            k => {
                let s = &self.shards[k - 1];
                (&s.bytes, s.data_offset)
            }
        }
    }

    /// Writes this model split into `parts` files `DIR/STEM-0000k-of-0000N.gguf` the way
    /// llama.cpp's `gguf-split` does (all metadata in the first file, `split.no`/`split.count`
    /// in every file, `split.tensors.count` in the first, tensors spread in order), so
    /// [`GgufFile::open`] on the first file reads it back whole. Returns the paths written.
    pub fn write_split(
        &self,
        dir: impl AsRef<Path>,
        stem: &str,
        parts: usize,
    ) -> Result<Vec<std::path::PathBuf>> {
        let (dir, parts) = (dir.as_ref(), parts.clamp(1, self.tensors.len().max(1)));
        let per = self.tensors.len().div_ceil(parts).max(1);
        let mut paths = Vec::with_capacity(parts);
        for k in 0..parts {
            let mut w = GgufWriter::new();
            if k == 0 {
                for (key, v) in self.metadata.iter() {
                    if !key.starts_with("split.") {
                        w.metadata.insert(key, v.clone());
                    }
                }
                w.metadata
                    .insert("split.tensors.count", Value::I32(self.tensors.len() as i32));
            }
            w.metadata.insert("split.no", Value::U16(k as u16));
            w.metadata.insert("split.count", Value::U16(parts as u16));
            for t in self.tensors.iter().skip(k * per).take(per) {
                w.add_tensor(
                    &t.name,
                    &t.shape,
                    t.ggml_type,
                    self.tensor_bytes(&t.name)?.to_vec(),
                )?;
            }
            let path = dir.join(format!("{stem}-{:05}-of-{parts:05}.gguf", k + 1));
            w.write(&path)?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// Number of files this model was read from (more than one for a split model).
    pub fn files(&self) -> usize {
        1 + self.shards.len()
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
        self.shard_of = vec![0; self.tensors.len()];
        self
    }

    /// The table entry for `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's table entry, the bytes of its file and where its data starts there.
    fn require(&self, name: &str) -> Result<(&TensorInfo, &Arc<Bytes>, usize)> {
        let i = *self.index.get(name).ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            msg: "not in this GGUF file".into(),
        })?;
        let t = &self.tensors[i];
        let (bytes, data_offset) = self.data_of(i);
        Ok((t, bytes, data_offset + t.offset as usize))
    }

    /// The raw bytes of a tensor (validated to lie inside the file when it was opened).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let (t, bytes, start) = self.require(name)?;
        Ok(&bytes.as_slice()[start..start + t.nbytes])
    }

    /// A tensor as an array viewing the file, with no copy.
    ///
    /// Dense types keep their dtype and shape. Block-quantized types become a `u8` array of shape
    /// `[rows, row_bytes]` (all leading dimensions flattened into rows); pair it with
    /// [`TensorInfo::ggml_type`] and the row length `shape.last()`.
    pub fn tensor(&self, name: &str) -> Result<Array> {
        let (t, bytes, start) = self.require(name)?;
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
        let aligned = (bytes.as_slice().as_ptr() as usize + start).is_multiple_of(dtype.size());
        let buffer = if aligned {
            mapped::view(bytes, start, t.nbytes)
        } else {
            // Only possible for an in-memory file whose Vec is oddly placed: copy.
            let b = tessera_core::memory::Buffer::alloc(t.nbytes)?;
            // SAFETY: fresh buffer of t.nbytes; source range validated at open.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_slice()[start..].as_ptr(),
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
