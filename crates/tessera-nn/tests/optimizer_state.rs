//! Adafactor against torch.optim.Adafactor (tests/fixtures/nn/adafactor.json, written by
//! scripts/gen-optim-fixtures.py), and every optimizer's state saved and restored so training
//! resumes exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tessera_core::transforms::Params;
use tessera_core::{Array, eval};
use tessera_nn::optim::{
    AdaDelta, Adafactor, Adagrad, Adam, Adamax, Lion, Optimizer, RmsProp, Sgd, load_state,
    save_state,
};

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn params(w: &[f64], b: &[f64]) -> Params {
    let mut p = Params::new();
    p.insert("w".into(), Array::from_slice(w, &[3, 4]).unwrap());
    p.insert("b".into(), Array::from_slice(b, &[4]).unwrap());
    p
}

#[test]
fn adafactor_matches_pytorch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nn/adafactor.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in doc["cases"].as_array().unwrap() {
        let kw = &case["kwargs"];
        let mut opt = Adafactor::new(kw["lr"].as_f64().unwrap());
        if let Some(wd) = kw.get("weight_decay").and_then(Value::as_f64) {
            opt = opt.weight_decay(wd);
        }
        if let Some(d) = kw.get("d").and_then(Value::as_f64) {
            opt.d = d;
        }
        if let Some(b) = kw.get("beta2_decay").and_then(Value::as_f64) {
            opt.beta2_decay = b;
        }
        let mut p = params(&floats(&case["w0"]), &floats(&case["b0"]));
        for (g, want) in case["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["steps"].as_array().unwrap())
        {
            let grads = params(&floats(&g[0]), &floats(&g[1]));
            p = opt.update(&p, &grads).unwrap();
            for (name, i) in [("w", 0), ("b", 1)] {
                let got = p[name].to_vec::<f64>().unwrap();
                let exp = floats(&want[i]);
                for (a, e) in got.iter().zip(&exp) {
                    assert!(
                        (a - e).abs() < 1e-12 * (1.0 + e.abs()),
                        "{kw} {name}: {a} vs {e}"
                    );
                }
            }
        }
    }
}

/// Trains 5 steps straight, and 3 steps + save + a fresh optimizer + load + 2 steps: the
/// results must be bit-identical.
fn resumes_exactly(make: &dyn Fn() -> Box<dyn Optimizer>) {
    let grads: Vec<Params> = (0..5)
        .map(|k| {
            let w: Vec<f64> = (0..12)
                .map(|i| ((i * 7 + k * 3) % 11) as f64 / 5.0 - 1.0)
                .collect();
            let b: Vec<f64> = (0..4).map(|i| ((i + k) % 5) as f64 / 3.0 - 0.6).collect();
            params(&w, &b)
        })
        .collect();
    let start = params(&[0.5; 12], &[-0.25; 4]);
    let run = |opt: &mut dyn Optimizer, mut p: Params, gs: &[Params]| -> Params {
        for g in gs {
            p = opt.update(&p, g).unwrap();
            let mut all: Vec<Array> = p.values().cloned().collect();
            all.extend(opt.state());
            eval(&all).unwrap();
        }
        p
    };
    let mut straight = make();
    let want = run(straight.as_mut(), start.clone(), &grads);
    let mut first = make();
    let mid = run(first.as_mut(), start, &grads[..3]);
    let file = std::env::temp_dir().join(format!(
        "tessera-opt-state-{}-{:p}.safetensors",
        std::process::id(),
        make
    ));
    save_state(first.as_mut(), &file).unwrap();
    let mut second = make();
    load_state(second.as_mut(), &file).unwrap();
    std::fs::remove_file(&file).ok();
    let got = run(second.as_mut(), mid, &grads[3..]);
    for (name, a) in &want {
        assert_eq!(
            a.to_vec::<f64>().unwrap(),
            got[name].to_vec::<f64>().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn every_optimizer_resumes_exactly_from_saved_state() {
    let makers: Vec<Box<dyn Fn() -> Box<dyn Optimizer>>> = vec![
        Box::new(|| Box::new(Sgd::new(0.1).momentum(0.9, true))),
        Box::new(|| Box::new(Adam::adamw(0.01, 0.1))),
        Box::new(|| {
            let mut o = RmsProp::new(0.01);
            o.centered = true;
            o.momentum = 0.5;
            Box::new(o)
        }),
        Box::new(|| Box::new(Adagrad::new(0.1))),
        Box::new(|| Box::new(Adamax::new(0.01))),
        Box::new(|| Box::new(Lion::new(0.01))),
        Box::new(|| Box::new(AdaDelta::new(1.0))),
        Box::new(|| Box::new(Adafactor::new(0.05))),
    ];
    for make in &makers {
        resumes_exactly(make.as_ref());
    }
}

#[test]
fn foreign_state_is_refused() {
    let mut opt = Adam::new(0.1);
    let mut bad = Params::new();
    bad.insert(
        "momentum_buffer.w".into(),
        Array::from_slice(&[1.0f64], &[1]).unwrap(),
    );
    let e = opt.load_state_dict(&bad).unwrap_err().to_string();
    assert!(e.contains("momentum_buffer.w"), "{e}");
}
