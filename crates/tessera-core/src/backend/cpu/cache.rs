//! The machine's cache sizes, for the kernels that block their operands to fit them.

use std::sync::OnceLock;

/// Bytes of the per-core L2 cache, read once from sysfs (Linux); 1 MB where it cannot be read.
pub(crate) fn l2_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| sysfs_size(2).unwrap_or(1 << 20))
}

/// Bytes of the last-level (L3) cache, read once from sysfs (Linux); 64 MB where it cannot be
/// read. For benchmarks that must stream from memory rather than from this cache.
pub fn llc_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| sysfs_size(3).unwrap_or(64 << 20))
}

/// The size of cpu0's cache `index` (2: L2, 3: L3 on x86 Linux), if sysfs gives it.
fn sysfs_size(index: usize) -> Option<usize> {
    std::fs::read_to_string(format!(
        "/sys/devices/system/cpu/cpu0/cache/index{index}/size"
    ))
    .ok()
    .and_then(|s| parse_size(&s))
}

/// A sysfs cache size ("2048K", "4M") in bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        _ => (s, 0),
    };
    digits.parse::<usize>().ok().map(|v| v << shift)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_sysfs_sizes() {
        assert_eq!(super::parse_size("2048K\n"), Some(2 << 20));
        assert_eq!(super::parse_size("4M"), Some(4 << 20));
        assert_eq!(super::parse_size("512"), Some(512));
        assert_eq!(super::parse_size("big"), None);
        assert_eq!(super::parse_size(""), None);
    }
}
