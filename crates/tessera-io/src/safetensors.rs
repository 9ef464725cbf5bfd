//! safetensors (Hugging Face): an 8-byte little-endian header length, a JSON header mapping each
//! tensor name to its dtype, shape and byte range, then the raw data.
//!
//! Files are memory-mapped and tensors view the map without copying (a tensor whose start is
//! not aligned to its element size is copied, since kernels need aligned loads). Sharded
//! checkpoints (`model.safetensors.index.json` with its `weight_map`) open as one [`Safetensors`]
//! set. Everything read from the file is validated: header size, JSON shape, dtype names, byte
//! ranges within the data, sizes matching the shapes, no overlaps.

use crate::error::{Error, Result};
use crate::mapped::{self, Bytes};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_core::{Array, Dtype};

/// Headers larger than this are refused (the reference implementation's limit).
const MAX_HEADER: u64 = 100 << 20;

/// One tensor entry of a safetensors header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// The dtype name as written (`F32`, `BF16`, `F8_E4M3`, ...).
    pub dtype_name: String,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub start: usize,
    pub end: usize,
}

impl TensorEntry {
    /// The tessera dtype, if tessera has one for this safetensors dtype.
    pub fn dtype(&self) -> Option<Dtype> {
        dtype_from_name(&self.dtype_name)
    }
}

fn dtype_from_name(s: &str) -> Option<Dtype> {
    Some(match s {
        "BOOL" => Dtype::Bool,
        "U8" => Dtype::U8,
        "U32" => Dtype::U32,
        "I32" => Dtype::I32,
        "I64" => Dtype::I64,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "F32" => Dtype::F32,
        "F64" => Dtype::F64,
        _ => return None,
    })
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "BOOL",
        Dtype::U8 => "U8",
        Dtype::U32 => "U32",
        Dtype::I32 => "I32",
        Dtype::I64 => "I64",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
    }
}

/// Element size of every dtype the format defines (so files with types tessera cannot compute
/// with still parse and list).
fn element_size(s: &str) -> Option<usize> {
    Some(match s {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

fn bad(offset: u64, msg: impl Into<String>) -> Error {
    Error::Format {
        format: "safetensors",
        path: None,
        offset,
        msg: msg.into(),
    }
}

/// One safetensors file.
pub struct SafetensorsFile {
    /// The free-form `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
    pub tensors: Vec<TensorEntry>,
    data_offset: usize,
    bytes: Arc<Bytes>,
    index: HashMap<String, usize>,
}

impl SafetensorsFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        let path = path.as_ref();
        parse(Bytes::map(path)?).map_err(|e| e.with_path(path))
    }

    /// Parses a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafetensorsFile> {
        parse(Arc::new(Bytes::Owned(bytes)))
    }

    pub fn info(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn require(&self, name: &str) -> Result<&TensorEntry> {
        self.info(name).ok_or_else(|| Error::Tensor {
            name: name.into(),
            msg: "not in this safetensors file".into(),
        })
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.require(name)?;
        Ok(&self.bytes.as_slice()[self.data_offset + t.start..self.data_offset + t.end])
    }

    /// A tensor as an array viewing the file (copied only when misaligned).
    pub fn tensor(&self, name: &str) -> Result<Array> {
        let t = self.require(name)?;
        let dtype = t.dtype().ok_or_else(|| Error::Tensor {
            name: name.into(),
            msg: format!("dtype {} is not supported by tessera yet", t.dtype_name),
        })?;
        let start = self.data_offset + t.start;
        let len = t.end - t.start;
        let ptr = self.bytes.as_slice()[start..].as_ptr() as usize;
        let buffer = if ptr.is_multiple_of(dtype.size()) {
            mapped::view(&self.bytes, start, len)
        } else {
            let b = tessera_core::memory::Buffer::alloc(len)?;
            // SAFETY: fresh buffer of `len` bytes; the source range was validated at open.
            unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, b.as_mut_ptr(), len) };
            b
        };
        Ok(Array::from_buffer(Arc::new(buffer), dtype, &t.shape)?)
    }
}

fn parse(bytes: Arc<Bytes>) -> Result<SafetensorsFile> {
    let data = bytes.as_slice();
    if data.len() < 8 {
        return Err(bad(
            0,
            format!("file is {} bytes, too short for a header", data.len()),
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[..8]);
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n > (data.len() - 8) as u64 {
        return Err(bad(
            0,
            format!(
                "header length {n} is larger than the file ({} bytes) or the {MAX_HEADER}-byte limit; is the file truncated or not safetensors?",
                data.len()
            ),
        ));
    }
    let data_offset = 8 + n as usize;
    let header: Value = serde_json::from_slice(&data[8..data_offset]).map_err(|e| {
        bad(
            8 + e.column() as u64,
            format!("header is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = header else {
        return Err(bad(8, "header is not a JSON object"));
    };
    let data_len = data.len() - data_offset;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        if name == "__metadata__" {
            let Value::Object(m) = v else {
                return Err(bad(8, "__metadata__ is not an object"));
            };
            for (k, v) in m {
                match v {
                    Value::String(s) => metadata.insert(k, s),
                    _ => {
                        return Err(bad(
                            8,
                            format!("__metadata__ value of '{k}' is not a string"),
                        ));
                    }
                };
            }
            continue;
        }
        tensors.push(entry(&name, &v, data_len)?);
    }
    // Ranges must not overlap (the reference requires them to tile the data exactly; we only
    // require no overlap, so files with padding between tensors still load).
    let mut ranges: Vec<(usize, usize, &str)> = tensors
        .iter()
        .filter(|t| t.end > t.start)
        .map(|t| (t.start, t.end, t.name.as_str()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(
                (data_offset + w[1].0) as u64,
                format!("tensors '{}' and '{}' overlap", w[0].2, w[1].2),
            ));
        }
    }
    let index = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    Ok(SafetensorsFile {
        metadata,
        tensors,
        data_offset,
        bytes,
        index,
    })
}

fn entry(name: &str, v: &Value, data_len: usize) -> Result<TensorEntry> {
    let err = |m: String| bad(8, format!("tensor '{name}': {m}"));
    let o: &Map<String, Value> = v
        .as_object()
        .ok_or_else(|| err("entry is not an object".into()))?;
    let dtype_name = o
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing dtype".into()))?
        .to_string();
    let size =
        element_size(&dtype_name).ok_or_else(|| err(format!("unknown dtype '{dtype_name}'")))?;
    let shape = o
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| err("missing shape".into()))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| err("shape has a non-integer dimension".into()))?;
    let offs = o
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
        .ok_or_else(|| err("data_offsets must be two integers".into()))?;
    let (start, end) = offs;
    if start > end || end > data_len as u64 {
        return Err(err(format!(
            "byte range {start}..{end} lies outside the {data_len} data bytes; is the file truncated?"
        )));
    }
    let nbytes = shape
        .iter()
        .try_fold(size, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(format!("shape {shape:?} overflows")))?;
    if nbytes as u64 != end - start {
        return Err(err(format!(
            "shape {shape:?} of {dtype_name} needs {nbytes} bytes, the range holds {}",
            end - start
        )));
    }
    Ok(TensorEntry {
        name: name.to_string(),
        dtype_name,
        shape,
        start: start as usize,
        end: end as usize,
    })
}

/// Writes `tensors` (evaluated first) and `metadata` to a safetensors file at `path`, through a
/// temporary file renamed at the end. Tensors are stored in name order; the header is padded
/// to 8 bytes so every tensor starts aligned.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Array)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let mut sorted: Vec<(&str, &Array)> = tensors.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for w in sorted.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::Tensor {
                name: w[0].0.into(),
                msg: "given twice".into(),
            });
        }
    }
    let mut header = Map::new();
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut offset = 0usize;
    let mut datas = Vec::with_capacity(sorted.len());
    for (name, a) in &sorted {
        let d = tessera_core::ops::contiguous(a)?.data()?;
        let n = a.nbytes();
        let mut e = Map::new();
        e.insert("dtype".into(), Value::String(dtype_name(a.dtype()).into()));
        e.insert("shape".into(), Value::from(a.shape().to_vec()));
        e.insert("data_offsets".into(), Value::from(vec![offset, offset + n]));
        header.insert((*name).to_string(), Value::Object(e));
        offset += n;
        datas.push(d);
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::Tensor {
        name: String::new(),
        msg: format!("header encoding failed: {e}"),
    })?;
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let tmp = path.with_extension("safetensors.partial");
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    {
        use std::io::Write;
        let f = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&h).map_err(io)?;
        for d in &datas {
            // SAFETY: contiguous array data of size * dtype.size() bytes.
            let s = unsafe { std::slice::from_raw_parts(d.ptr::<u8>(), d.size() * d.dtype.size()) };
            w.write_all(s).map_err(io)?;
        }
        w.flush().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// A checkpoint of one or more safetensors files seen as one set of tensors.
pub struct Safetensors {
    files: Vec<SafetensorsFile>,
    map: HashMap<String, usize>,
}

impl Safetensors {
    /// Opens a single `.safetensors` file, a `model.safetensors.index.json`, or a directory
    /// holding either.
    pub fn open(path: impl AsRef<Path>) -> Result<Safetensors> {
        let path = path.as_ref();
        let target: PathBuf = if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            if index.exists() {
                index
            } else {
                path.join("model.safetensors")
            }
        } else {
            path.to_path_buf()
        };
        if target.extension().and_then(|e| e.to_str()) == Some("json") {
            return Self::open_index(&target);
        }
        let f = SafetensorsFile::open(&target)?;
        let map = f.tensors.iter().map(|t| (t.name.clone(), 0)).collect();
        Ok(Safetensors {
            files: vec![f],
            map,
        })
    }

    fn open_index(index: &Path) -> Result<Safetensors> {
        let io = |source| Error::Io {
            path: index.to_path_buf(),
            source,
        };
        let text = std::fs::read(index).map_err(io)?;
        let fmt = |msg: String| Error::Format {
            format: "safetensors index",
            path: Some(index.to_path_buf()),
            offset: 0,
            msg,
        };
        let v: Value =
            serde_json::from_slice(&text).map_err(|e| fmt(format!("not valid JSON: {e}")))?;
        let wm = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| fmt("missing the weight_map object".into()))?;
        let dir = index.parent().unwrap_or_else(|| Path::new("."));
        let mut shard_ids: HashMap<String, usize> = HashMap::new();
        let mut files = Vec::new();
        let mut map = HashMap::new();
        for (name, shard) in wm {
            let shard = shard
                .as_str()
                .ok_or_else(|| fmt(format!("weight_map entry '{name}' is not a file name")))?;
            if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                return Err(fmt(format!(
                    "shard name '{shard}' must be a plain file name"
                )));
            }
            let id = match shard_ids.get(shard) {
                Some(&i) => i,
                None => {
                    files.push(SafetensorsFile::open(dir.join(shard))?);
                    shard_ids.insert(shard.to_string(), files.len() - 1);
                    files.len() - 1
                }
            };
            if files[id].info(name).is_none() {
                return Err(fmt(format!(
                    "'{name}' is mapped to {shard}, which does not contain it"
                )));
            }
            map.insert(name.clone(), id);
        }
        Ok(Safetensors { files, map })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Option<&TensorEntry> {
        self.map.get(name).and_then(|&i| self.files[i].info(name))
    }

    pub fn tensor(&self, name: &str) -> Result<Array> {
        match self.map.get(name) {
            Some(&i) => self.files[i].tensor(name),
            None => Err(Error::Tensor {
                name: name.into(),
                msg: "not in this checkpoint".into(),
            }),
        }
    }

    /// The `__metadata__` of the first file.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.files
            .first()
            .map(|f| f.metadata.clone())
            .unwrap_or_default()
    }
}
