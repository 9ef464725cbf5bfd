//! The part of the zip format `.npz` archives use: reading stored and deflated entries through
//! the central directory (with zip64 sizes), and writing stored entries. Sizes come from the
//! file and are checked before anything is allocated or inflated; CRCs are verified.

use crate::error::{Error, Result};

fn bad(offset: usize, msg: impl Into<String>) -> Error {
    Error::Format {
        format: "zip",
        path: None,
        offset: offset as u64,
        msg: msg.into(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| bad(at, "truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad(at, "truncated"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    let lo = u32_at(b, at)? as u64;
    let hi = u32_at(b, at + 4)? as u64;
    Ok(lo | (hi << 32))
}

/// CRC-32 (IEEE), as zip uses.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = t[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Every file of the archive as (name, bytes).
pub(crate) fn read_entries(b: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    // The end-of-central-directory record is in the last 22 + 65535 bytes.
    let lo = b.len().saturating_sub(22 + 65535);
    let eocd = (lo..b.len().saturating_sub(21))
        .rev()
        .find(|&i| b[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| {
            bad(
                b.len(),
                "no end-of-central-directory record: not a zip/npz file, or truncated",
            )
        })?;
    let mut count = u16_at(b, eocd + 10)? as u64;
    let mut cd = u32_at(b, eocd + 16)? as u64;
    // zip64: the locator sits just before the EOCD.
    if eocd >= 20 && b[eocd - 20..eocd - 16] == [0x50, 0x4b, 0x06, 0x07] {
        let rec = u64_at(b, eocd - 12)? as usize;
        if u32_at(b, rec)? != 0x0606_4b50 {
            return Err(bad(rec, "bad zip64 end record"));
        }
        count = u64_at(b, rec + 32)?;
        cd = u64_at(b, rec + 48)?;
    }
    let mut at =
        usize::try_from(cd).map_err(|_| bad(eocd, "central directory offset too large"))?;
    if count > (b.len() / 46) as u64 {
        return Err(bad(eocd, format!("{count} entries cannot fit in the file")));
    }
    let mut out = Vec::new();
    for _ in 0..count {
        if u32_at(b, at)? != 0x0201_4b50 {
            return Err(bad(at, "bad central directory entry"));
        }
        let flags = u16_at(b, at + 8)?;
        let method = u16_at(b, at + 10)?;
        let crc = u32_at(b, at + 16)?;
        let mut csize = u32_at(b, at + 20)? as u64;
        let mut usize_ = u32_at(b, at + 24)? as u64;
        let nlen = u16_at(b, at + 28)? as usize;
        let xlen = u16_at(b, at + 30)? as usize;
        let clen = u16_at(b, at + 32)? as usize;
        let mut local = u32_at(b, at + 42)? as u64;
        let name_bytes = b
            .get(at + 46..at + 46 + nlen)
            .ok_or_else(|| bad(at, "truncated name"))?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        // zip64 extra field: the 0xFFFFFFFF fields, in order.
        let mut x = at + 46 + nlen;
        let xend = x + xlen;
        while x + 4 <= xend {
            let id = u16_at(b, x)?;
            let len = u16_at(b, x + 2)? as usize;
            if id == 1 {
                let mut p = x + 4;
                if usize_ == 0xFFFF_FFFF {
                    usize_ = u64_at(b, p)?;
                    p += 8;
                }
                if csize == 0xFFFF_FFFF {
                    csize = u64_at(b, p)?;
                    p += 8;
                }
                if local == 0xFFFF_FFFF {
                    local = u64_at(b, p)?;
                }
            }
            x += 4 + len;
        }
        if flags & 1 != 0 {
            return Err(bad(at, format!("entry '{name}' is encrypted")));
        }
        let local = local as usize;
        if u32_at(b, local)? != 0x0403_4b50 {
            return Err(bad(local, format!("bad local header for '{name}'")));
        }
        let start = local + 30 + u16_at(b, local + 26)? as usize + u16_at(b, local + 28)? as usize;
        let data = usize::try_from(csize)
            .ok()
            .and_then(|c| b.get(start..start.checked_add(c)?))
            .ok_or_else(|| {
                bad(
                    start,
                    format!("entry '{name}' runs past the end of the file"),
                )
            })?;
        let bytes = match method {
            0 => data.to_vec(),
            8 => {
                // The declared size bounds the output, so a zip bomb is an error, not an OOM.
                let limit = usize::try_from(usize_).map_err(|_| bad(at, "entry too large"))?;
                miniz_oxide::inflate::decompress_to_vec_with_limit(data, limit)
                    .map_err(|e| bad(start, format!("entry '{name}' does not inflate: {e:?}")))?
            }
            m => {
                return Err(bad(
                    at,
                    format!(
                        "entry '{name}' uses compression method {m} (stored and deflate are supported)"
                    ),
                ));
            }
        };
        if bytes.len() as u64 != usize_ || crc32(&bytes) != crc {
            return Err(bad(
                start,
                format!("entry '{name}' is corrupt (size or CRC mismatch)"),
            ));
        }
        out.push((name, bytes));
        at += 46 + nlen + xlen + clen;
    }
    Ok(out)
}

/// A zip archive of stored (uncompressed) entries. Entries must be under 4 GiB each.
pub(crate) fn write_stored(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let header = |sig: u32, central_entry: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&sig.to_le_bytes());
            if central_entry {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u16.to_le_bytes()); // time
            h.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central_entry {
                h.extend_from_slice(&0u16.to_le_bytes()); // comment
                h.extend_from_slice(&0u16.to_le_bytes()); // disk
                h.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
                h.extend_from_slice(&0u32.to_le_bytes()); // external attrs
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend_from_slice(&header(0x0403_4b50, false));
        out.extend_from_slice(data);
        central.extend_from_slice(&header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
