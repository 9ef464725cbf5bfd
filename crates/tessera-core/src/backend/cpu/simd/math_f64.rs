//! f64 functions std lacks (erf, erfinv). Scalar: f64 transcendental work is rare in ML graphs,
//! so these favour accuracy (near 1 ulp) over speed.

const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// The error function, accurate to a few ulp.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    if ax < 2.5 {
        // Maclaurin series; terms alternate, worst cancellation near 2.5 costs ~2 digits.
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        // At most ~60 terms are needed for |x| < 2.5; the bound also ends the loop at x = 0.
        for n in 1..100 {
            let n = n as f64;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        (FRAC_2_SQRT_PI * sum).copysign(x)
    } else {
        (1.0 - erfc_large(ax)).copysign(x)
    }
}

/// erfc(x) for x >= 2.5 by its continued fraction (modified Lentz).
fn erfc_large(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0;
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..300 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// Inverse error function on [-1, 1]; ±1 give ±inf, outside gives NaN.
pub fn erfinv_f64(y: f64) -> f64 {
    if y.is_nan() || y.abs() > 1.0 {
        return f64::NAN;
    }
    if y.abs() == 1.0 {
        return f64::INFINITY.copysign(y);
    }
    // Start from a coarse closed form (Winitzki), then Newton on erf(x) - y.
    let a = 0.147;
    let ln = (1.0 - y * y).ln();
    let t = 2.0 / (std::f64::consts::PI * a) + ln / 2.0;
    let mut x = ((t * t - ln / a).sqrt() - t).sqrt().copysign(y);
    for _ in 0..60 {
        let err = if x.abs() < 2.5 {
            erf_f64(x) - y
        } else {
            (1.0 - erfc_large(x.abs())).copysign(x) - y
        };
        let step = err / (FRAC_2_SQRT_PI * (-x * x).exp());
        x -= step;
        if step.abs() <= 1e-16 * x.abs() {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        // Values from the defining integral (Abramowitz & Stegun table 7.1).
        assert!((erf_f64(0.5) - 0.520_499_877_813_046_5).abs() < 1e-15);
        assert!((erf_f64(1.0) - 0.842_700_792_949_714_9).abs() < 1e-15);
        assert!((erf_f64(3.0) - 0.999_977_909_503_001_4).abs() < 1e-15);
        assert_eq!(erf_f64(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(erf_f64(40.0), 1.0);
    }

    #[test]
    fn erfinv_inverts() {
        for &y in &[-0.999999, -0.9, -0.3, 0.0, 1e-10, 0.5, 0.99, 0.9999999] {
            let x = erfinv_f64(y);
            assert!((erf_f64(x) - y).abs() < 1e-14 * (1.0 + y.abs()), "{y} {x}");
        }
        assert_eq!(erfinv_f64(1.0), f64::INFINITY);
        assert!(erfinv_f64(1.5).is_nan());
    }
}
