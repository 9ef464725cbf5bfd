//! Layers, activations and losses against PyTorch in float64: forward values and the gradients
//! of sum(out * w) for every input and parameter (tests/fixtures/nn/layers.json, written by
//! scripts/gen-nn-fixtures.py).

use serde_json::Value;
use std::collections::BTreeMap;
use tessera_core::ops::{self, Axes};
use tessera_core::transforms::value_and_grad;
use tessera_core::{Array, Result};
use tessera_nn::{activations, layers, losses};

fn tensor(v: &Value) -> Array {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    Array::from_slice(&data, &shape).unwrap()
}

fn close(name: &str, a: &Array, e: &Array) {
    assert_eq!(a.shape(), e.shape(), "{name}: shape");
    for (i, (x, y)) in a
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .zip(e.to_vec::<f64>().unwrap())
        .enumerate()
    {
        assert!(
            (x - y).abs() <= 1e-10 * y.abs().max(1.0),
            "{name}[{i}]: {x} vs torch {y}"
        );
    }
}

type Fwd = Box<dyn Fn(&BTreeMap<String, Array>, &BTreeMap<String, Array>) -> Result<Array>>;

#[test]
fn layers_match_pytorch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nn/layers.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let ints: BTreeMap<String, Array> = c["int_inputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let vals: Vec<i64> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect();
                let shape: Vec<usize> = c["inputs"][k]["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                (k.clone(), Array::from_slice(&vals, &shape).unwrap())
            })
            .collect();
        // Float inputs and parameters are differentiated; integer inputs are constants.
        let mut names = vec![];
        let mut values = vec![];
        for group in ["inputs", "params"] {
            for (k, v) in c[group].as_object().unwrap() {
                if !ints.contains_key(k) {
                    names.push(k.clone());
                    values.push(tensor(v));
                }
            }
        }
        let eps = c["extra"]["eps"].as_f64().unwrap_or(0.0);
        let smoothing = c["extra"]["label_smoothing"].as_f64().unwrap_or(0.0);
        let f: Fwd = match name {
            "layer_norm" => Box::new(move |a, _| {
                layers::layer_norm(&a["x"], Some(&a["weight"]), Some(&a["bias"]), eps)
            }),
            "rms_norm" => Box::new(move |a, _| layers::rms_norm(&a["x"], Some(&a["weight"]), eps)),
            "linear" => Box::new(|a, _| {
                ops::add(
                    &ops::matmul(&a["x"], &ops::transpose(&a["weight"], None)?)?,
                    &a["bias"],
                )
            }),
            "embedding" => Box::new(|a, i| ops::take(&a["weight"], &i["idx"], Some(0))),
            "gelu" => Box::new(|a, _| activations::gelu(&a["x"])),
            "gelu_tanh" => Box::new(|a, _| activations::gelu_tanh(&a["x"])),
            "silu" => Box::new(|a, _| activations::silu(&a["x"])),
            "relu" => Box::new(|a, _| activations::relu(&a["x"])),
            "mse_loss" => Box::new(|a, _| ops::reshape(&losses::mse_loss(&a["x"], &a["y"])?, &[1])),
            "cross_entropy" => Box::new(move |a, i| {
                ops::reshape(&losses::cross_entropy(&a["x"], &i["y"], smoothing)?, &[1])
            }),
            other => panic!("no driver for {other}"),
        };
        let w = tensor(&c["w"]);
        let (out, grads) = value_and_grad(
            |xs| {
                let a: BTreeMap<String, Array> =
                    names.iter().cloned().zip(xs.iter().cloned()).collect();
                let y = f(&a, &ints)?;
                ops::sum(&ops::multiply(&y, &w)?, Axes::All, false)
            },
            &values,
        )
        .unwrap();
        let a: BTreeMap<String, Array> =
            names.iter().cloned().zip(values.iter().cloned()).collect();
        close(
            &format!("{name} forward"),
            &f(&a, &ints).unwrap(),
            &tensor(&c["out"]),
        );
        let _ = out;
        for (k, g) in names.iter().zip(&grads) {
            close(&format!("{name} d/d{k}"), g, &tensor(&c["grads"][k]));
        }
    }
    assert_eq!(cases.len(), 10);
}

#[test]
fn dropout_keeps_the_expectation() {
    let x = ops::ones(&[100_000], tessera_core::Dtype::F32).unwrap();
    let k = tessera_core::random::key(5);
    let y = layers::dropout(&x, 0.25, true, Some(&k)).unwrap();
    let v = y.to_vec::<f32>().unwrap();
    let zeros = v.iter().filter(|&&z| z == 0.0).count() as f64 / v.len() as f64;
    assert!((zeros - 0.25).abs() < 0.01, "{zeros}");
    assert!(v.iter().all(|&z| z == 0.0 || (z - 1.0 / 0.75).abs() < 1e-6));
    assert_eq!(
        layers::dropout(&x, 0.25, false, None)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![1.0; 100_000]
    );
    assert!(layers::dropout(&x, 1.0, true, None).is_err());
}
