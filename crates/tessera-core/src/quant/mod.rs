//! Quantized weight formats.
//!
//! A quantized matrix stays quantized in memory: a `u8` array of shape `[rows, row_bytes]` holding
//! the raw blocks of one format, exactly as they lie in a GGUF file (so a memory-mapped file is
//! used in place). [`GgmlType`] names the GGUF/ggml block formats and their geometry; the kernels
//! that decode them and multiply with them are in `backend::cpu::quant`.

use crate::error::{Error, Result};

/// The ggml tensor types, with the numeric ids GGUF files store.
///
/// Block geometry (`block_size` values per `type_size` bytes) follows ggml's definitions; the
/// `K` formats group 256 values in a super-block with per-sub-block scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
}

/// `(type, id, name, block_size, type_size)` for every type, in id order.
const TABLE: &[(GgmlType, u32, &str, usize, usize)] = &[
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
];

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        // The table lists every variant, so the search always succeeds.
        TABLE.iter().find(|e| e.0 == self).unwrap_or(&TABLE[0])
    }

    /// The type for a GGUF type id; an unknown id is an error naming it.
    pub fn from_id(id: u32) -> Result<GgmlType> {
        TABLE
            .iter()
            .find(|e| e.1 == id)
            .map(|e| e.0)
            .ok_or_else(|| Error::Invalid {
                op: "gguf",
                msg: format!("unknown ggml tensor type id {id}"),
            })
    }

    /// The type for a name such as `"Q4_K"` (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|e| e.2.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    /// The id GGUF files store.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// ggml's name, e.g. `"Q4_K"`.
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        self.entry().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().4
    }

    /// True for the block-quantized formats (everything but the plain float/int types).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by a row of `n` values, or an error when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return Err(Error::Invalid {
                op: "quant",
                msg: format!(
                    "a row of {n} values is not a whole number of {} blocks ({bs} values each)",
                    self.name()
                ),
            });
        }
        (n / bs)
            .checked_mul(self.type_size())
            .ok_or_else(|| Error::Invalid {
                op: "quant",
                msg: format!("a row of {n} {} values overflows", self.name()),
            })
    }

    /// Bits per value, e.g. 4.5 for Q4_0.
    pub fn bits_per_value(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_geometry() {
        for e in TABLE {
            assert_eq!(GgmlType::from_id(e.1).unwrap(), e.0);
            assert_eq!(GgmlType::from_name(e.2), Some(e.0));
        }
        assert!(GgmlType::from_id(4).is_err()); // removed Q4_2
        assert_eq!(GgmlType::Q4_K.row_bytes(512).unwrap(), 288);
        assert!(GgmlType::Q4_K.row_bytes(100).is_err());
        assert_eq!(GgmlType::Q4_0.bits_per_value(), 4.5);
    }
}
