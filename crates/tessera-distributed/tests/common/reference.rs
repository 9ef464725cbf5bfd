//! The reference check every backend's collectives must pass: each collective on each dtype
//! against values computed locally from every rank's deterministic input, send/recv around the
//! ring, and NaN propagation in max/min.

#![allow(dead_code)]

use super::Lcg;
use tessera_core::{Array, Dtype};
use tessera_distributed::Group;

pub const DTYPES: [Dtype; 9] = [
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

/// Rank r's input for a case: small integers, so every dtype holds sums exactly.
pub fn input(rank: usize, case: u64, len: usize, dtype: Dtype) -> Vec<f64> {
    let v = Lcg(case * 1000 + rank as u64 + 1).small(len, 6);
    if dtype == Dtype::Bool {
        v.into_iter().map(|x| (x >= 3.0) as u8 as f64).collect()
    } else {
        v
    }
}

pub fn array(v: &[f64], dtype: Dtype) -> Array {
    Array::from_slice(v, &[v.len()])
        .unwrap()
        .astype(dtype)
        .unwrap()
}

pub fn values(a: &Array) -> Vec<f64> {
    a.astype(Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

/// Every collective on every dtype, against a reference computed locally from every rank's
/// (deterministic) input.
pub fn check_all(g: &Group, case: u64, len: usize) {
    let (n, r) = (g.size(), g.rank());
    for (di, &dt) in DTYPES.iter().enumerate() {
        let case = case * 16 + di as u64;
        let all: Vec<Vec<f64>> = (0..n).map(|k| input(k, case, len, dt)).collect();
        let x = array(&all[r], dt);
        let fold = |f: fn(f64, f64) -> f64| -> Vec<f64> {
            (0..len)
                .map(|i| all.iter().map(|v| v[i]).reduce(f).unwrap())
                .collect()
        };
        let or = |a: f64, b: f64| ((a != 0.0) || (b != 0.0)) as u8 as f64;
        let sum = if dt == Dtype::Bool {
            fold(or)
        } else {
            fold(|a, b| a + b)
        };
        let what = format!("{dt} len {len} rank {r} of {n}");
        let y = g.all_sum(&x).unwrap();
        assert_eq!(y.dtype(), dt);
        assert_eq!(values(&y), sum, "all_sum {what}");
        assert_eq!(
            values(&g.all_max(&x).unwrap()),
            fold(f64::max),
            "all_max {what}"
        );
        assert_eq!(
            values(&g.all_min(&x).unwrap()),
            fold(f64::min),
            "all_min {what}"
        );
        let gathered: Vec<f64> = all.concat();
        let y = g.all_gather(&x).unwrap();
        assert_eq!(y.shape(), &[n * len]);
        assert_eq!(y.dtype(), dt);
        assert_eq!(values(&y), gathered, "all_gather {what}");
        // sum_scatter of the gathered array (the same on every rank, times n).
        let scattered = g.sum_scatter(&array(&gathered, dt)).unwrap();
        assert_eq!(scattered.dtype(), dt);
        let want: Vec<f64> = gathered[r * len..(r + 1) * len]
            .iter()
            .map(|&v| if dt == Dtype::Bool { v } else { v * n as f64 })
            .collect();
        assert_eq!(values(&scattered), want, "sum_scatter {what}");
        if n == 1 {
            continue;
        }
        // send/recv around the ring: even ranks send first, odd ranks receive first, so
        // blocking sends of any size meet their receives.
        let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
        let got = if r % 2 == 0 {
            g.send(&x, next).unwrap().eval().unwrap();
            g.recv(&[len], dt, prev).unwrap()
        } else {
            let got = g.recv_like(&x, prev).unwrap();
            got.eval().unwrap();
            g.send(&x, next).unwrap().eval().unwrap();
            got
        };
        assert_eq!(got.dtype(), dt);
        assert_eq!(values(&got), all[prev], "recv {what}");
    }
    // Float max and min propagate NaN from any rank, as the ring backend does.
    for dt in [Dtype::F16, Dtype::BF16, Dtype::F32, Dtype::F64] {
        let v = [if r == n - 1 { f64::NAN } else { r as f64 }, 1.0 + r as f64];
        let x = array(&v, dt);
        for y in [g.all_max(&x).unwrap(), g.all_min(&x).unwrap()] {
            let y = values(&y);
            assert!(y[0].is_nan(), "{dt} rank {r} of {n}: {y:?}");
        }
        assert_eq!(values(&g.all_max(&x).unwrap())[1], n as f64);
        assert_eq!(values(&g.all_min(&x).unwrap())[1], 1.0);
    }
}
