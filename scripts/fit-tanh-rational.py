#!/usr/bin/env python3
"""Fits a rational approximation of f32 tanh: tried and not kept (BENCHMARKS.md, "Compiled
chains of cheap ops"): about twice as fast as the expm1 form in simd/math.rs, but 5.4 ulp at
worst in f32 against 2.39. Kept for whoever tries again.

tanh(x) = x * P(x^2) / Q(x^2) on |x| <= CLAMP, with P of degree NP and Q of degree NQ in
s = x^2, Q(0) = 1. The fit minimises the maximum *relative* error of P/Q against tanh(x)/x (which
is the relative error of tanh itself) over s in [0, CLAMP^2]: a linearised least-squares fit
(Sanathanan-Koerner: divide by the previous denominator, so the linear problem approaches the
real one) with Lawson reweighting toward the minimax solution. Pure f64 with mpmath only for the
reference values.

The coefficients are then rounded to f32 and the printed error is that of the rounded rational
in exact arithmetic; the f32 evaluation (Horner with FMAs, one division) adds several ulp near
|x| = 8, where the result is just below 1 (measured with a throwaway Rust loop over every f32).

Usage: fit-tanh-rational.py [NP NQ [CLAMP]]   (default 5 4 9.25)
Needs numpy and mpmath (e.g. a throwaway venv).
"""
import sys

import mpmath
import numpy as np

# Past ~9.01, tanh(x) rounds to 1 in f32; fitting a little beyond lets the clamped value round
# to exactly 1.
CLAMP = 9.25



def main():
    np_deg, nq_deg = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (5, 4)
    clamp = float(sys.argv[3]) if len(sys.argv) > 3 else CLAMP
    mpmath.mp.prec = 80
    # Dense in x (uniform in x, not s, so small |x| is well covered) plus the ends.
    x = np.concatenate([np.linspace(0.0, clamp, 20001)[1:], [1e-4, 1e-3, 1e-2]])
    x = np.sort(x)
    s = x * x
    g = np.array([float(mpmath.tanh(mpmath.mpf(v)) / mpmath.mpf(v)) for v in x])
    # Scale s to [0, 1] for conditioning; undone at the end.
    scale = clamp * clamp
    u = s / scale
    vp = np.vander(u, np_deg + 1, increasing=True)  # 1, u, u^2, ...
    vq = np.vander(u, nq_deg + 1, increasing=True)[:, 1:]  # u, u^2, ... (q0 = 1)
    w = np.ones_like(u)
    qprev = np.ones_like(u)
    best = None
    for it in range(400):
        # Residual (P - g Q) / (g Qprev), linear in the unknowns, weighted by sqrt(w).
        scale_row = np.sqrt(w) / (g * qprev)
        a = np.hstack([vp, -(g[:, None] * vq)]) * scale_row[:, None]
        b = g * scale_row
        coef, *_ = np.linalg.lstsq(a, b, rcond=None)
        p = coef[: np_deg + 1]
        q = np.concatenate([[1.0], coef[np_deg + 1 :]])
        pv = np.polynomial.polynomial.polyval(u, p)
        qv = np.polynomial.polynomial.polyval(u, q)
        err = pv / qv / g - 1.0
        m = np.max(np.abs(err))
        if best is None or m < best[0]:
            best = (m, p.copy(), q.copy())
        qprev = qv
        # Lawson: weights grow where the error is large.
        w = w * np.abs(err)
        w = w / w.sum()
        w = np.maximum(w, 1e-300)
    m, p, q = best
    # Back to powers of s, then rounded to f32.
    p_s = np.array([c / scale**k for k, c in enumerate(p)])
    q_s = np.array([c / scale**k for k, c in enumerate(q)])
    p32 = p_s.astype(np.float32).astype(np.float64)
    q32 = q_s.astype(np.float32).astype(np.float64)
    pv = np.polynomial.polynomial.polyval(s, p32)
    qv = np.polynomial.polynomial.polyval(s, q32)
    m32 = np.max(np.abs(pv / qv / g - 1.0))
    print(f"degrees P {np_deg}, Q {nq_deg} in x^2 on |x| <= {clamp}")
    print(f"max relative error: {m:.3e} exact coefficients, {m32:.3e} rounded to f32 "
          f"({m32 / 2**-24:.2f} half-ulps of 1)")
    for k, c in enumerate(p32):
        print(f"P{k} = {np.float32(c)!r}")
    for k, c in enumerate(q32):
        print(f"Q{k} = {np.float32(c)!r}")


if __name__ == "__main__":
    main()
