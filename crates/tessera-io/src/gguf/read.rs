//! The GGUF parser: a bounds-checked cursor over the file bytes. Every length read from the file
//! is checked against the bytes that remain before anything is allocated, so a malformed or
//! hostile file is an error naming the offset, never a panic or a huge allocation.

use super::value::{Metadata, Value, ValueType};
use super::{GgufFile, TensorInfo};
use crate::error::{Error, Result};
use crate::mapped::Bytes;
use std::sync::Arc;
use tessera_core::quant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
/// ggml tensors have at most four dimensions.
const MAX_DIMS: usize = 4;
/// Arrays nested deeper than this are rejected (real files nest at most once).
const MAX_DEPTH: usize = 8;

pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn format_err(offset: usize, msg: impl Into<String>) -> Error {
    Error::Format {
        format: "GGUF",
        path: None,
        offset: offset as u64,
        msg: msg.into(),
    }
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format_err(
                self.pos,
                format!(
                    "file ends while reading {what} ({n} bytes needed, {} left); is it truncated?",
                    self.bytes.len() - self.pos
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A count of items of at least `min_size` bytes each, checked against the bytes left.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_size.max(1)) <= self.remaining());
        fits.ok_or_else(|| {
            format_err(
                at,
                format!(
                    "{what} is {n}, more than the {} bytes left in the file could hold",
                    self.remaining()
                ),
            )
        })
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(what, 1)?;
        let at = self.pos;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|e| format_err(at, format!("{what} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>("u8")?[0]),
            ValueType::I8 => Value::I8(self.array::<1>("i8")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>("bool")?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(format_err(at, format!("bool value is {b}, not 0 or 1"))),
                }
            }
            ValueType::String => Value::String(self.string("string")?),
            ValueType::Array => {
                if depth >= MAX_DEPTH {
                    return Err(format_err(self.pos, "arrays nested too deeply"));
                }
                let at = self.pos;
                let id = self.u32("array element type")?;
                let elem = ValueType::from_id(id)
                    .ok_or_else(|| format_err(at, format!("unknown array element type {id}")))?;
                let n = self.count("array length", elem.min_size())?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}

/// Parses the header, metadata and tensor table of a GGUF file held in `bytes`.
pub(super) fn parse(bytes: Arc<Bytes>) -> Result<GgufFile> {
    let data = bytes.as_slice();
    let mut c = Cursor {
        bytes: data,
        pos: 0,
    };
    let magic = c.array::<4>("magic")?;
    if &magic != MAGIC {
        return Err(format_err(
            0,
            format!("not a GGUF file (starts with {magic:02x?}, expected \"GGUF\")"),
        ));
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(format_err(
                4,
                "GGUF version 1 is obsolete (32-bit counts); re-convert the model with a current llama.cpp",
            ));
        }
        v if v.swap_bytes() <= 3 => {
            return Err(format_err(4, "big-endian GGUF files are not supported"));
        }
        v => {
            return Err(format_err(
                4,
                format!("unsupported GGUF version {v} (2 and 3 are supported)"),
            ));
        }
    }
    // Each tensor info takes at least 8 (name) + 4 + 4 + 8 bytes; each key/value at least 8 + 4 + 1.
    let n_tensors = c.count("tensor count", 24)?;
    let n_kv = c.count("metadata count", 13)?;

    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let at = c.pos;
        let key = c.string("metadata key")?;
        let tat = c.pos;
        let id = c.u32("metadata value type")?;
        let ty = ValueType::from_id(id).ok_or_else(|| {
            format_err(tat, format!("metadata '{key}' has unknown value type {id}"))
        })?;
        let value = c.value(ty, 0).map_err(|e| match e {
            Error::Format { offset, msg, .. } => {
                format_err(offset as usize, format!("metadata '{key}': {msg}"))
            }
            e => e,
        })?;
        if metadata.contains(&key) {
            return Err(format_err(
                at,
                format!("metadata key '{key}' appears twice (entry {i})"),
            ));
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_int() {
            Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 20 => a as usize,
            _ => {
                return Err(format_err(
                    0,
                    format!("general.alignment must be a power of two, found {v:?}"),
                ));
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = std::collections::HashSet::new();
    for _ in 0..n_tensors {
        let at = c.pos;
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor dimension count")? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format_err(
                at,
                format!("tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            let d = c.u64("tensor dimension")?;
            dims.push(
                usize::try_from(d).map_err(|_| {
                    format_err(at, format!("tensor '{name}' dimension {d} too large"))
                })?,
            );
        }
        let tat = c.pos;
        let id = c.u32("tensor type")?;
        let ggml_type = GgmlType::from_id(id)
            .map_err(|_| format_err(tat, format!("tensor '{name}' has unknown type id {id}")))?;
        let offset = c.u64("tensor offset")?;
        let info =
            TensorInfo::new(name, dims, ggml_type, offset).map_err(|msg| format_err(at, msg))?;
        if !names.insert(info.name.clone()) {
            return Err(format_err(
                at,
                format!("tensor '{}' appears twice", info.name),
            ));
        }
        tensors.push(info);
    }

    let data_offset = c.pos.div_ceil(alignment) * alignment;
    let data_len = data.len().saturating_sub(data_offset);
    for t in &tensors {
        if t.offset % alignment as u64 != 0 {
            return Err(format_err(
                data_offset,
                format!(
                    "tensor '{}' starts at data offset {}, not a multiple of the alignment {alignment}",
                    t.name, t.offset
                ),
            ));
        }
        let end = t.offset.checked_add(t.nbytes as u64);
        if end.is_none_or(|e| e > data_len as u64) {
            return Err(format_err(
                data_offset.saturating_add(usize::try_from(t.offset).unwrap_or(usize::MAX)),
                format!(
                    "tensor '{}' ({} bytes at data offset {}) runs past the end of the file ({} data bytes); is the file truncated?",
                    t.name, t.nbytes, t.offset, data_len
                ),
            ));
        }
    }

    Ok(GgufFile {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        bytes,
        index: std::collections::HashMap::new(),
        shard_of: Vec::new(),
        shards: Vec::new(),
    }
    .indexed())
}
