//! Temporary std-based element functions (scalar, not vectorised).
macro_rules! f {
    ($($n:ident => $e:expr),*) => { $( #[inline(always)] pub fn $n(x: f32) -> f32 { let g: fn(f32) -> f32 = $e; g(x) } )* };
}
f!(exp_f32 => |x| x.exp(), expm1_f32 => |x| x.exp_m1(), log_f32 => |x| x.ln(), log1p_f32 => |x| x.ln_1p(),
   log2_f32 => |x| x.log2(), sin_f32 => |x| x.sin(), cos_f32 => |x| x.cos(), tan_f32 => |x| x.tan(),
   tanh_f32 => |x| x.tanh(), sinh_f32 => |x| x.sinh(), cosh_f32 => |x| x.cosh(), asin_f32 => |x| x.asin(),
   acos_f32 => |x| x.acos(), atan_f32 => |x| x.atan(), sigmoid_f32 => |x| 1.0 / (1.0 + (-x).exp()),
   erf_f32 => |x| x, erfinv_f32 => |x| x);
#[inline(always)] pub fn atan2_f32(y: f32, x: f32) -> f32 { y.atan2(x) }
