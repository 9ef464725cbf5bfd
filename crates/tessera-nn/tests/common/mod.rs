//! Helpers shared by the PyTorch golden-value tests: the fixture files the
//! `scripts/gen-nn-*-fixtures.py` generators write under `tests/fixtures/nn/` (at the
//! repository root), tensors stored in them, and comparisons against them.

// Each test binary uses its own subset.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::Value;
use tessera_core::transforms::Params;
use tessera_core::{Array, Dtype};

/// The fixture document `tests/fixtures/nn/<name>`.
pub fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nn")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

pub fn shape_of(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

pub fn data_of(v: &Value) -> Vec<f64> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A fixture tensor in `dt` (tensors marked `"bool": true` stay bool).
pub fn tensor(v: &Value, dt: Dtype) -> Array {
    let (shape, data) = (shape_of(v), data_of(v));
    if v["bool"].as_bool() == Some(true) {
        let b: Vec<bool> = data.iter().map(|&x| x != 0.0).collect();
        return Array::from_slice(&b, &shape).unwrap();
    }
    Array::from_slice(&data, &shape)
        .unwrap()
        .astype(dt)
        .unwrap()
}

/// Named fixture tensors, in `dt`.
pub fn params_of(v: &Value, dt: Dtype) -> Params {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (k.clone(), tensor(t, dt)))
        .collect()
}

/// `a` against the reference `e`, element by element, relative to max(|e|, 1); infinite
/// references must be matched exactly.
pub fn close(name: &str, a: &Array, e: &Array, tol: f64) {
    assert_eq!(a.shape(), e.shape(), "{name}: shape");
    let a = a.astype(Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    let e = e.astype(Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let ok = if y.is_infinite() {
            x == y
        } else {
            (x - y).abs() <= tol * y.abs().max(1.0)
        };
        assert!(ok, "{name}[{i}]: {x} vs torch {y}");
    }
}
