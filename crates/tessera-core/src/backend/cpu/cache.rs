//! The machine's cache sizes, for the kernels that block their operands to fit them.

use std::sync::OnceLock;

/// Bytes of the per-core L2 cache, read once from sysfs (Linux); 1 MB where it cannot be read.
pub(crate) fn l2_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size")
            .ok()
            .and_then(|s| parse_size(&s))
            .unwrap_or(1 << 20)
    })
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
