//! Helpers shared by the integration tests that compare quantized products with their
//! reference (each test file is its own crate and includes this module).
#![allow(dead_code, clippy::unwrap_used)]

use tessera_core::{Array, Dtype, random};

/// Uniform values in [-1, 1), reproducible from `seed`.
pub fn uniform(shape: &[usize], seed: u64) -> Array {
    let key = random::key(seed);
    random::uniform(-1.0, 1.0, shape, Dtype::F32, Some(&key)).unwrap()
}

/// Asserts `a` and `b` (f32, same size) agree within `tol` relative to `1 + |b|`, element by
/// element.
pub fn close(a: &Array, b: &Array, tol: f32) {
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "[{i}]: {x} vs {y}");
    }
}
