//! Random numbers with explicit, splittable keys (counter-based Threefry), as in JAX and MLX.
//!
//! A key is a uint32 array of shape (2,). The same key always gives the same numbers, whatever
//! the thread count. Functions take `Option<&Array>`: with `None` they split a process-wide key
//! (set by [`seed`]), so unkeyed calls still form one reproducible sequence after `seed(s)`.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Result, invalid};
use crate::ops;
use crate::primitive::Primitive;
use std::sync::Mutex;

static GLOBAL_KEY: Mutex<Option<Array>> = Mutex::new(None);

/// A key from an integer seed: a uint32 array of shape `(2,)` holding the high and low 32 bits.
/// Never fails.
/// ```
/// use tessera_core::{Dtype, random};
/// let k = random::key(42);
/// assert_eq!((k.shape(), k.dtype()), (&[2usize][..], Dtype::U32));
/// assert_eq!(k.to_vec::<u32>().unwrap(), vec![0, 42]);
/// ```
pub fn key(seed: u64) -> Array {
    let words = [(seed >> 32) as u32, seed as u32];
    Array::from_slice(&words, &[2]).unwrap_or_else(|_| Array::scalar(0u32))
}

/// Resets the process-wide key used when no key is passed, so the unkeyed calls that follow form
/// a reproducible sequence (the key is shared by all threads).
/// ```rust,standalone_crate
/// use tessera_core::{Dtype, random};
/// random::seed(7);
/// let a = random::uniform(0.0, 1.0, &[4], Dtype::F32, None).unwrap().to_vec::<f32>().unwrap();
/// random::seed(7);
/// let b = random::uniform(0.0, 1.0, &[4], Dtype::F32, None).unwrap().to_vec::<f32>().unwrap();
/// assert_eq!(a, b);
/// ```
pub fn seed(s: u64) {
    *GLOBAL_KEY.lock().unwrap_or_else(|e| e.into_inner()) = Some(key(s));
}

fn check_key(k: &Array) -> Result<()> {
    if k.dtype() != Dtype::U32 || k.shape() != [2] {
        return invalid(
            "random",
            format!(
                "a key is a uint32 array of shape (2,), got {} {:?}",
                k.dtype(),
                k.shape()
            ),
        );
    }
    Ok(())
}

/// The key to use: the given one, or the next split of the global key.
fn next_key(k: Option<&Array>) -> Result<Array> {
    if let Some(k) = k {
        check_key(k)?;
        return Ok(k.clone());
    }
    let mut g = GLOBAL_KEY.lock().unwrap_or_else(|e| e.into_inner());
    let cur = match g.take() {
        Some(c) => c,
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            key(t)
        }
    };
    let ks = split(&cur, 2)?;
    *g = Some(ops::reshape(&ops::slice_axis(&ks, 0, 0, 1)?, &[2])?);
    ops::reshape(&ops::slice_axis(&ks, 0, 1, 2)?, &[2])
}

/// `num` new keys derived from `key`: a uint32 array of shape `(num, 2)`; row `i` is a key.
/// `Err` unless `key` is a uint32 array of shape `(2,)`.
/// ```
/// use tessera_core::{Dtype, ops, random};
/// let ks = random::split(&random::key(0), 3).unwrap();
/// assert_eq!((ks.shape(), ks.dtype()), (&[3usize, 2][..], Dtype::U32));
/// let k1 = ops::reshape(&ops::slice_axis(&ks, 0, 1, 2).unwrap(), &[2]).unwrap();
/// assert_eq!(random::bits(&[2], Some(&k1)).unwrap().shape(), &[2]);
/// assert!(random::split(&random::key(0).astype(Dtype::I32).unwrap(), 2).is_err());
/// ```
pub fn split(key: &Array, num: usize) -> Result<Array> {
    check_key(key)?;
    Ok(Array::lazy(
        Primitive::RandomBits,
        vec![key.clone()],
        vec![num, 2],
        Dtype::U32,
    ))
}

/// Uniform random uint32 words of `shape`. `key` `None` splits the process-wide key. `Err` for an
/// invalid key (see [`split`]) or a shape whose size overflows.
/// ```
/// use tessera_core::{Dtype, random};
/// let k = random::key(1);
/// let a = random::bits(&[2, 3], Some(&k)).unwrap();
/// assert_eq!((a.shape(), a.dtype()), (&[2usize, 3][..], Dtype::U32));
/// assert_eq!(a.to_vec::<u32>().unwrap(), random::bits(&[2, 3], Some(&k)).unwrap().to_vec::<u32>().unwrap());
/// ```
pub fn bits(shape: &[usize], key: Option<&Array>) -> Result<Array> {
    ops::check_shape_size("random.bits", shape)?;
    let k = next_key(key)?;
    Ok(Array::lazy(
        Primitive::RandomBits,
        vec![k],
        shape.to_vec(),
        Dtype::U32,
    ))
}

/// Uniform values in `[low, high)` with 24 random bits each: shape `shape`, dtype `dtype`
/// (`low == high` is accepted and gives the value just below it). `Err` for a non-float `dtype`,
/// non-finite bounds or `high < low`, or an invalid key.
/// ```
/// use tessera_core::{Dtype, random};
/// let u = random::uniform(-1.0, 1.0, &[1000], Dtype::F32, Some(&random::key(0))).unwrap();
/// assert_eq!((u.shape(), u.dtype()), (&[1000usize][..], Dtype::F32));
/// assert!(u.to_vec::<f32>().unwrap().iter().all(|&x| (-1.0..1.0).contains(&x)));
/// assert!(random::uniform(0.0, 1.0, &[2], Dtype::I32, None).is_err());
/// ```
pub fn uniform(
    low: f64,
    high: f64,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    if !dtype.is_float() {
        return invalid("uniform", format!("needs a float dtype, got {dtype}"));
    }
    if !(low.is_finite() && high.is_finite()) || high <= low {
        return invalid(
            "uniform",
            format!("bounds must be finite with low < high, got [{low}, {high})"),
        );
    }
    let b = bits(shape, key)?;
    let u = ops::multiply(
        &ops::right_shift(&b, &Array::scalar(8u32))?.astype(Dtype::F32)?,
        &Array::scalar((1.0f64 / (1u64 << 24) as f64) as f32),
    )?;
    let u = u.astype(dtype)?;
    let scaled = ops::add(
        &ops::multiply(&u, &Array::scalar_of(high - low, dtype))?,
        &Array::scalar_of(low, dtype),
    )?;
    // Rounding in low precision can reach `high`: keep the interval half-open.
    let below = Array::scalar_of(next_below(high, dtype), dtype);
    ops::minimum(&scaled, &below)
}

fn next_below(x: f64, dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F64 => f64::from_bits(if x > 0.0 {
            x.to_bits() - 1
        } else {
            x.to_bits() + 1
        }),
        Dtype::F16 | Dtype::BF16 => {
            let e = if dtype == Dtype::F16 {
                2f64.powi(-11)
            } else {
                2f64.powi(-8)
            };
            x - x.abs().max(1e-30) * e
        }
        _ => {
            let f = x as f32;
            (if f > 0.0 {
                f32::from_bits(f.to_bits() - 1)
            } else if f == 0.0 {
                -f32::from_bits(1)
            } else {
                f32::from_bits(f.to_bits() + 1)
            }) as f64
        }
    }
}

/// Normal values with mean `loc` and standard deviation `scale` (computed in float32 by the inverse
/// CDF, `sqrt(2) * erfinv(u)` for `u` uniform in (-1, 1), then converted): shape `shape`, dtype
/// `dtype`. `Err` for a non-float `dtype` or an invalid key.
/// ```
/// use tessera_core::{Dtype, ops, ops::Axes, random};
/// let n = random::normal(&[10000], Dtype::F32, 3.0, 2.0, Some(&random::key(0))).unwrap();
/// let m = ops::mean(&n, Axes::All, false).unwrap().item::<f32>().unwrap();
/// let s = ops::std(&n, Axes::All, false, 0).unwrap().item::<f32>().unwrap();
/// assert!((m - 3.0).abs() < 0.1 && (s - 2.0).abs() < 0.1);
/// ```
pub fn normal(
    shape: &[usize],
    dtype: Dtype,
    loc: f64,
    scale: f64,
    key: Option<&Array>,
) -> Result<Array> {
    if !dtype.is_float() {
        return invalid("normal", format!("needs a float dtype, got {dtype}"));
    }
    if !(loc.is_finite() && scale.is_finite() && scale >= 0.0) {
        return invalid(
            "normal",
            format!("needs a finite loc and a finite scale >= 0, got {loc}, {scale}"),
        );
    }
    let lo = f32::from_bits((-1.0f32).to_bits() - 1) as f64;
    let u = uniform(lo, 1.0, shape, Dtype::F32, key)?;
    let z = ops::multiply(&ops::erfinv(&u)?, &Array::scalar(std::f32::consts::SQRT_2))?;
    let z = ops::add(
        &ops::multiply(&z, &Array::scalar_of(scale, dtype))?,
        &Array::scalar_of(loc, dtype),
    )?;
    z.astype(dtype)
}

/// Integers uniform in `[low, high)` (by a remainder, so very slightly biased for ranges that do
/// not divide 2^32): shape `shape`, dtype `dtype`; bounds outside `dtype`'s range are not checked
/// and values wrap. `Err` for a non-integer `dtype`, `high <= low`, a range of 2^32 or more, or
/// an invalid key.
/// ```
/// use tessera_core::{Dtype, random};
/// let r = random::randint(-3, 3, &[100], Dtype::I32, Some(&random::key(5))).unwrap();
/// assert_eq!(r.dtype(), Dtype::I32);
/// assert!(r.to_vec::<i32>().unwrap().iter().all(|&x| (-3..3).contains(&x)));
/// ```
pub fn randint(
    low: i64,
    high: i64,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    if !dtype.is_integer() {
        return invalid("randint", format!("needs an integer dtype, got {dtype}"));
    }
    let range = high
        .checked_sub(low)
        .filter(|&r| r > 0 && r as u64 <= u32::MAX as u64);
    if range.is_none() {
        return invalid(
            "randint",
            format!("needs low < high with a range below 2^32, got [{low}, {high})"),
        );
    }
    let (lo_ok, hi_ok) = match dtype {
        Dtype::U8 => (low >= 0, high - 1 <= u8::MAX as i64),
        Dtype::U32 => (low >= 0, high - 1 <= u32::MAX as i64),
        Dtype::I32 => (low >= i32::MIN as i64, high - 1 <= i32::MAX as i64),
        _ => (true, true),
    };
    if !(lo_ok && hi_ok) {
        return invalid(
            "randint",
            format!("[{low}, {high}) does not fit in {dtype}"),
        );
    }
    let b = bits(shape, key)?;
    let r = ops::remainder(&b, &Array::scalar((high - low) as u32))?;
    ops::add(&r.astype(Dtype::I64)?, &Array::scalar(low))?.astype(dtype)
}

/// Bool array of `shape`, each element true with probability `p`. `Err` for `p` outside `[0, 1]`
/// (or NaN) or an invalid key.
/// ```
/// use tessera_core::{Dtype, random};
/// let b = random::bernoulli(1.0, &[3], Some(&random::key(0))).unwrap();
/// assert_eq!(b.dtype(), Dtype::Bool);
/// assert_eq!(b.to_vec::<bool>().unwrap(), vec![true; 3]);
/// ```
pub fn bernoulli(p: f64, shape: &[usize], key: Option<&Array>) -> Result<Array> {
    if !(0.0..=1.0).contains(&p) {
        return invalid("bernoulli", format!("p must be in [0, 1], got {p}"));
    }
    ops::less(
        &uniform(0.0, 1.0, shape, Dtype::F32, key)?,
        &Array::scalar(p as f32),
    )
}

/// Samples class indices from unnormalised log-probabilities `logits` along `axis` (Gumbel-max):
/// one uint32 index per row, so the shape of `logits` without `axis`. `Err` for an out-of-range
/// axis or an empty one, or an invalid key.
/// ```
/// use tessera_core::{Array, Dtype, random};
/// let logits = Array::from_slice(&[0.0f32, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0], &[2, 2]).unwrap();
/// let c = random::categorical(&logits, -1, Some(&random::key(3))).unwrap();
/// assert_eq!((c.shape(), c.dtype()), (&[2usize][..], Dtype::U32));
/// assert_eq!(c.to_vec::<u32>().unwrap(), vec![0, 1]);
/// ```
pub fn categorical(logits: &Array, axis: isize, key: Option<&Array>) -> Result<Array> {
    let lo = f32::MIN_POSITIVE as f64;
    let u = uniform(lo, 1.0, logits.shape(), Dtype::F32, key)?;
    let g = ops::negative(&ops::log(&ops::negative(&ops::log(&u)?)?)?)?;
    ops::argmax(
        &ops::add(&logits.astype(Dtype::F32)?, &g)?,
        Some(axis),
        false,
    )
}

/// Standard normal values restricted to `[lower, upper]`, by inverting the CDF over that interval
/// (computed in float32, then converted to `dtype`, which is not checked: integers truncate):
/// shape `shape`. `Err` unless `lower < upper` (NaN bounds included), or for an invalid key.
/// ```
/// use tessera_core::{Dtype, random};
/// let t = random::truncated_normal(-1.0, 2.0, &[1000], Dtype::F32, Some(&random::key(0))).unwrap();
/// assert_eq!(t.dtype(), Dtype::F32);
/// assert!(t.to_vec::<f32>().unwrap().iter().all(|&x| (-1.0..=2.0).contains(&x)));
/// ```
pub fn truncated_normal(
    lower: f64,
    upper: f64,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    if lower.is_nan() || upper.is_nan() || lower >= upper {
        return invalid(
            "truncated_normal",
            format!("needs lower < upper, got [{lower}, {upper}]"),
        );
    }
    if !dtype.is_float() {
        return invalid(
            "truncated_normal",
            format!("needs a float dtype, got {dtype}"),
        );
    }
    let cdf = |x: f64| {
        0.5 * (1.0 + crate::backend::cpu::simd::math_f64::erf_f64(x / std::f64::consts::SQRT_2))
    };
    let (a, b) = (2.0 * cdf(lower) - 1.0, 2.0 * cdf(upper) - 1.0);
    let u = uniform(a, b, shape, Dtype::F32, key)?;
    let z = ops::multiply(&ops::erfinv(&u)?, &Array::scalar(std::f32::consts::SQRT_2))?;
    let z = ops::clip(
        &z,
        Some(&Array::scalar(lower.max(-1e30) as f32)),
        Some(&Array::scalar(upper.min(1e30) as f32)),
    )?;
    z.astype(dtype)
}

/// A random permutation of `0..n`: uint32, shape `(n,)`. `Err` only for an invalid key.
/// ```
/// use tessera_core::{Dtype, random};
/// let p = random::permutation(5, Some(&random::key(0))).unwrap();
/// assert_eq!(p.dtype(), Dtype::U32);
/// let mut v = p.to_vec::<u32>().unwrap();
/// v.sort();
/// assert_eq!(v, vec![0, 1, 2, 3, 4]);
/// ```
pub fn permutation(n: usize, key: Option<&Array>) -> Result<Array> {
    ops::argsort(&bits(&[n], key)?, Some(0))
}

/// `x` with its first axis shuffled (rows stay intact); same shape and dtype. `Err` for a 0-d
/// array or an invalid key.
/// ```
/// use tessera_core::{Array, random};
/// let x = Array::from_slice(&[1i32, 1, 2, 2, 3, 3], &[3, 2]).unwrap();
/// let s = random::shuffle(&x, Some(&random::key(9))).unwrap();
/// assert_eq!(s.shape(), &[3, 2]);
/// let v = s.to_vec::<i32>().unwrap();
/// assert!(v.chunks(2).all(|r| r[0] == r[1]));
/// assert_eq!(v.iter().sum::<i32>(), 12);
/// ```
pub fn shuffle(x: &Array, key: Option<&Array>) -> Result<Array> {
    if x.ndim() == 0 {
        return invalid("permutation", "cannot shuffle a 0-d array");
    }
    ops::take(x, &permutation(x.shape()[0], key)?, Some(0))
}
