//! NumPy `.npy` arrays and `.npz` archives (zip files of `.npy`, stored or deflated).
//!
//! Reading handles every dtype tessera has, both byte orders (big-endian data is swapped) and
//! Fortran order (read as the transposed C array, then transposed back as a view). Writing emits
//! version 1.0 headers, C order, little-endian; `.npz` archives are written stored
//! (uncompressed), as `numpy.savez` does.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tessera_core::{Array, Dtype, ops};

const MAGIC: &[u8] = b"\x93NUMPY";

fn bad(offset: usize, msg: impl Into<String>) -> Error {
    Error::Format {
        format: "npy",
        path: None,
        offset: offset as u64,
        msg: msg.into(),
    }
}

/// Parses the `descr` string: dtype and whether bytes need swapping.
fn parse_descr(d: &str) -> Result<(Dtype, bool)> {
    let (order, code) = d.split_at(d.len().min(1));
    let (order, code) = match order {
        "<" | ">" | "|" | "=" => (order, code),
        _ => ("|", d),
    };
    let dtype = match code {
        "b1" | "?" => Dtype::Bool,
        "u1" => Dtype::U8,
        "u4" => Dtype::U32,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        "f2" => Dtype::F16,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        _ => {
            return Err(bad(
                0,
                format!(
                    "dtype '{d}' is not supported (tessera reads bool, u8, u32, i32, i64, f16, f32, f64)"
                ),
            ));
        }
    };
    let big = order == ">" || (order == "=" && cfg!(target_endian = "big"));
    Ok((dtype, big && dtype.size() > 1))
}

/// Finds `'key': value` in the header dict and returns the value text.
fn dict_value<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let start = h.find(&pat)? + pat.len();
    let rest = h[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(quoted) = rest.strip_prefix('\'') {
        quoted.find('\'')? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Reads an `.npy` file.
pub fn load(path: impl AsRef<Path>) -> Result<Array> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes).map_err(|e| e.with_path(path))
}

/// Parses `.npy` bytes.
pub fn from_bytes(b: &[u8]) -> Result<Array> {
    if b.len() < 10 || &b[..6] != MAGIC {
        return Err(bad(0, "not a .npy file (bad magic)"));
    }
    let major = b[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10usize),
        2 | 3 => {
            if b.len() < 12 {
                return Err(bad(8, "truncated header length"));
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(bad(6, format!("unsupported .npy version {v}"))),
    };
    let hend = hstart
        .checked_add(hlen)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| {
            bad(
                8,
                format!("header of {hlen} bytes runs past the end of the file"),
            )
        })?;
    let header =
        std::str::from_utf8(&b[hstart..hend]).map_err(|_| bad(hstart, "header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| bad(hstart, "header lacks 'descr'"))?;
    let (dtype, swap) = parse_descr(descr.trim_matches('\''))?;
    let fortran = match dict_value(header, "fortran_order") {
        Some("True") => true,
        Some("False") => false,
        _ => return Err(bad(hstart, "header lacks a True/False 'fortran_order'")),
    };
    let shape_txt =
        dict_value(header, "shape").ok_or_else(|| bad(hstart, "header lacks 'shape'"))?;
    let shape = shape_txt
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| bad(hstart, format!("bad shape {shape_txt}")))?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| bad(hstart, format!("shape {shape_txt} is too large")))?;
    let data = b.get(hend..hend + n).ok_or_else(|| {
        bad(
            hend,
            format!(
                "{n} data bytes expected, {} present; is the file truncated?",
                b.len() - hend
            ),
        )
    })?;
    let mut raw = data.to_vec();
    if swap {
        for c in raw.chunks_exact_mut(dtype.size()) {
            c.reverse();
        }
    }
    if dtype == Dtype::Bool && raw.iter().any(|&v| v > 1) {
        return Err(bad(hend, "bool data holds values other than 0 and 1"));
    }
    let stored: Vec<usize> = if fortran {
        shape.iter().rev().copied().collect()
    } else {
        shape.clone()
    };
    let buf = tessera_core::memory::Buffer::alloc(raw.len())?;
    // SAFETY: fresh buffer of raw.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr(), buf.as_mut_ptr(), raw.len()) };
    let a = Array::from_buffer(std::sync::Arc::new(buf), dtype, &stored)?;
    Ok(if fortran && shape.len() > 1 {
        ops::transpose(&a, None)?
    } else {
        a
    })
}

fn descr(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "|b1",
        Dtype::U8 => "|u1",
        Dtype::U32 => "<u4",
        Dtype::I32 => "<i4",
        Dtype::I64 => "<i8",
        Dtype::F16 => "<f2",
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
        Dtype::BF16 => "<V2", // numpy has no bfloat16; callers convert first
    }
}

/// Encodes an array as `.npy` bytes (evaluating it). bf16 is refused (NumPy has no such dtype):
/// convert to f32 first.
pub fn to_bytes(a: &Array) -> Result<Vec<u8>> {
    if a.dtype() == Dtype::BF16 {
        return Err(Error::Tensor {
            name: String::new(),
            msg: "NumPy has no bfloat16: convert to f32 before saving".into(),
        });
    }
    let shape = match a.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut h = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        descr(a.dtype())
    );
    // Pad so the data starts at a multiple of 64 bytes, ending the header with a newline.
    let total = (10 + h.len() + 1).div_ceil(64) * 64;
    while 10 + h.len() + 1 < total {
        h.push(' ');
    }
    h.push('\n');
    let mut out = Vec::with_capacity(total + a.nbytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    let d = ops::contiguous(a)?.data()?;
    // SAFETY: contiguous data of size * dtype.size() bytes.
    out.extend_from_slice(unsafe {
        std::slice::from_raw_parts(d.ptr::<u8>(), d.size() * d.dtype.size())
    });
    Ok(out)
}

/// Writes an array to an `.npy` file.
pub fn save(path: impl AsRef<Path>, a: &Array) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, to_bytes(a)?).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every array of an `.npz` archive, keyed by name (without `.npy`).
pub fn load_npz(path: impl AsRef<Path>) -> Result<BTreeMap<String, Array>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = BTreeMap::new();
    for (name, data) in crate::zip::read_entries(&bytes).map_err(|e| e.with_path(path))? {
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let a = from_bytes(&data).map_err(|e| match e {
            Error::Format { offset, msg, .. } => Error::Format {
                format: "npz",
                path: Some(path.to_path_buf()),
                offset,
                msg: format!("entry '{name}': {msg}"),
            },
            e => e,
        })?;
        out.insert(key, a);
    }
    Ok(out)
}

/// Writes arrays to an uncompressed `.npz` archive (as `numpy.savez`).
pub fn save_npz(path: impl AsRef<Path>, arrays: &[(&str, &Array)]) -> Result<()> {
    let path = path.as_ref();
    let entries = arrays
        .iter()
        .map(|(n, a)| Ok((format!("{n}.npy"), to_bytes(a)?)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::write(path, crate::zip::write_stored(&entries)).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
