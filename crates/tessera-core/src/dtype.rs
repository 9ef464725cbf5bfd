//! Element types and the type-promotion rules (MLX's table, which NumPy shares except that an
//! integer meeting a half-precision float stays half precision rather than widening to f64).

use half::{bf16, f16};
use std::fmt;

/// The element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    Bool,
    U8,
    U32,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

/// Broad class of a dtype, used by promotion and validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Unsigned,
    Signed,
    Float,
}

impl Dtype {
    /// All dtypes, in promotion order within each kind.
    pub const ALL: [Dtype; 9] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::U32,
        Dtype::I32,
        Dtype::I64,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F32,
        Dtype::F64,
    ];

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 => 1,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }

    pub const fn kind(self) -> Kind {
        match self {
            Dtype::Bool => Kind::Bool,
            Dtype::U8 | Dtype::U32 => Kind::Unsigned,
            Dtype::I32 | Dtype::I64 => Kind::Signed,
            Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64 => Kind::Float,
        }
    }

    pub const fn is_float(self) -> bool {
        matches!(self.kind(), Kind::Float)
    }

    pub const fn is_integer(self) -> bool {
        matches!(self.kind(), Kind::Unsigned | Kind::Signed)
    }

    /// Float dtypes stay; everything else becomes f32 (what `exp(int_array)` computes in).
    pub const fn at_least_float(self) -> Dtype {
        if self.is_float() { self } else { Dtype::F32 }
    }

    /// The NumPy name (`float32`, `bfloat16`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::U8 => "uint8",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Parses a NumPy-style name (`float32`, `f32`, `bf16`, ...).
    pub fn from_name(name: &str) -> Option<Dtype> {
        Some(match name {
            "bool" => Dtype::Bool,
            "uint8" | "u8" => Dtype::U8,
            "uint32" | "u32" => Dtype::U32,
            "int32" | "i32" => Dtype::I32,
            "int64" | "i64" => Dtype::I64,
            "float16" | "f16" | "half" => Dtype::F16,
            "bfloat16" | "bf16" => Dtype::BF16,
            "float32" | "f32" | "float" => Dtype::F32,
            "float64" | "f64" | "double" => Dtype::F64,
            _ => return None,
        })
    }

    /// Rank inside its kind, for "larger of the two".
    const fn rank(self) -> u8 {
        match self {
            Dtype::Bool => 0,
            Dtype::U8 => 1,
            Dtype::U32 => 3,
            Dtype::I32 => 3,
            Dtype::I64 => 4,
            Dtype::F16 | Dtype::BF16 => 1,
            Dtype::F32 => 2,
            Dtype::F64 => 3,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The dtype two operands are converted to before a binary op (MLX's promotion table).
pub fn promote_types(a: Dtype, b: Dtype) -> Dtype {
    use Dtype::*;
    if a == b {
        return a;
    }
    match (a.kind(), b.kind()) {
        (Kind::Bool, _) => b,
        (_, Kind::Bool) => a,
        (Kind::Float, Kind::Float) => {
            if (a == F16 && b == BF16) || (a == BF16 && b == F16) {
                F32
            } else if a.rank() >= b.rank() {
                a
            } else {
                b
            }
        }
        (Kind::Float, _) => a,
        (_, Kind::Float) => b,
        (Kind::Unsigned, Kind::Unsigned) | (Kind::Signed, Kind::Signed) => {
            if a.rank() >= b.rank() {
                a
            } else {
                b
            }
        }
        _ => {
            // Mixed signedness: the smallest signed type that holds both ranges.
            let (u, s) = if a.kind() == Kind::Unsigned {
                (a, b)
            } else {
                (b, a)
            };
            match (u, s) {
                (U8, I32) => I32,
                (U8, I64) | (U32, I32) | (U32, I64) => I64,
                _ => I64,
            }
        }
    }
}

/// A Rust type that can be an array element.
pub trait Element: Copy + Send + Sync + 'static + fmt::Debug + PartialEq + Default {
    const DTYPE: Dtype;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
    fn from_f32(v: f32) -> Self {
        Self::from_f64(v as f64)
    }
    /// Exact conversion for integers wider than f64's mantissa.
    fn to_i64(self) -> i64 {
        self.to_f64() as i64
    }
    fn from_i64(v: i64) -> Self {
        Self::from_f64(v as f64)
    }
}

macro_rules! int_element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: Dtype = $d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            // `as` saturates, and maps NaN to 0: the documented float -> int cast.
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
        }
    };
}
int_element!(u8, Dtype::U8);
int_element!(u32, Dtype::U32);
int_element!(i32, Dtype::I32);
int_element!(i64, Dtype::I64);

impl Element for bool {
    const DTYPE: Dtype = Dtype::Bool;
    fn to_f64(self) -> f64 {
        if self { 1.0 } else { 0.0 }
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for f64 {
    const DTYPE: Dtype = Dtype::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl Element for f16 {
    const DTYPE: Dtype = Dtype::F16;
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Element for bf16 {
    const DTYPE: Dtype = Dtype::BF16;
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// Calls `$body` with `$T` bound to the Rust type of `$dtype`.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::Dtype::Bool => {
                type $T = bool;
                $body
            }
            $crate::Dtype::U8 => {
                type $T = u8;
                $body
            }
            $crate::Dtype::U32 => {
                type $T = u32;
                $body
            }
            $crate::Dtype::I32 => {
                type $T = i32;
                $body
            }
            $crate::Dtype::I64 => {
                type $T = i64;
                $body
            }
            $crate::Dtype::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::Dtype::BF16 => {
                type $T = half::bf16;
                $body
            }
            $crate::Dtype::F32 => {
                type $T = f32;
                $body
            }
            $crate::Dtype::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dtype::*;

    #[test]
    fn promotion_table() {
        assert_eq!(promote_types(Bool, U8), U8);
        assert_eq!(promote_types(U8, I32), I32);
        assert_eq!(promote_types(U32, I32), I64);
        assert_eq!(promote_types(I64, F16), F16);
        assert_eq!(promote_types(F16, BF16), F32);
        assert_eq!(promote_types(F32, F64), F64);
        assert_eq!(promote_types(BF16, F32), F32);
        for a in Dtype::ALL {
            for b in Dtype::ALL {
                assert_eq!(promote_types(a, b), promote_types(b, a), "{a} {b}");
            }
        }
    }
}
