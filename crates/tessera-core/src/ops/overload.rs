//! Operator overloads on `&Array` (and `Array`) for +, -, *, /, %, unary -, and with Rust
//! scalars (weakly typed: `&a * 2.0` keeps a's float dtype).
//!
//! Operators cannot return `Result`, so they panic with the op's error message on invalid
//! input (incompatible shapes), as ndarray does. Use the functions in `ops` to handle errors.

use crate::array::Array;
use std::ops::{Add, Div, Mul, Neg, Rem, Sub};

macro_rules! overload {
    ($Trait:ident, $method:ident, $f:path) => {
        impl $Trait<&Array> for &Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: &Array) -> Array {
                $f(self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl $Trait<Array> for Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: Array) -> Array {
                $f(&self, &rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl $Trait<&Array> for Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: &Array) -> Array {
                $f(&self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl $Trait<f64> for &Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: f64) -> Array {
                $f(self, &super::scalar_like(rhs, self)).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl $Trait<f32> for &Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: f32) -> Array {
                $f(self, &super::scalar_like(rhs as f64, self)).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl $Trait<f64> for Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: f64) -> Array {
                $f(&self, &super::scalar_like(rhs, &self)).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl $Trait<f32> for Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: f32) -> Array {
                $f(&self, &super::scalar_like(rhs as f64, &self)).unwrap_or_else(|e| panic!("{e}"))
            }
        }
    };
}

overload!(Add, add, super::add);
overload!(Sub, sub, super::subtract);
overload!(Mul, mul, super::multiply);
overload!(Div, div, super::divide);
overload!(Rem, rem, super::remainder);

impl Neg for &Array {
    type Output = Array;
    #[track_caller]
    fn neg(self) -> Array {
        super::negative(self).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Neg for Array {
    type Output = Array;
    #[track_caller]
    fn neg(self) -> Array {
        super::negative(&self).unwrap_or_else(|e| panic!("{e}"))
    }
}
