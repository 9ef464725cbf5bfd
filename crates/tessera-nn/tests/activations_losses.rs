//! Activations and losses against PyTorch: forward values and the gradients of sum(out * w) with
//! respect to every differentiable input (tests/fixtures/nn/activations_losses.json, written by
//! scripts/gen-nn-act-loss-fixtures.py), in float64 (tight) and float32 (with a tolerance); plus
//! argument errors, transforms (vmap, compile, grad of grad) and the initialisers' statistics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{fixture, shape_of};
use serde_json::Value;
use std::collections::BTreeMap;
use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{compile, grad, value_and_grad, vmap};
use tessera_core::{Array, Dtype, Result, random};
use tessera_nn::activations as act;
use tessera_nn::init::{self, FanMode, Nonlinearity};
use tessera_nn::losses::{self, CrossEntropyOptions, KlReduction, Reduction};

fn tensor(v: &Value, dtype: Dtype) -> Array {
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    Array::from_slice(&data, &shape_of(v))
        .unwrap()
        .astype(dtype)
        .unwrap()
}

fn int_tensor(v: &Value) -> Array {
    let data: Vec<i64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    Array::from_slice(&data, &shape_of(v)).unwrap()
}

fn close(name: &str, a: &Array, e: &[f64], shape: &[usize], rtol: f64, atol: f64) {
    assert_eq!(a.shape(), shape, "{name}: shape");
    let got = a.astype(Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    for (i, (x, y)) in got.iter().zip(e).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{name}[{i}]: {x} vs torch {y}"
        );
    }
}

fn reduction(args: &Value) -> Reduction {
    match args["reduction"].as_str().unwrap() {
        "none" => Reduction::None,
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        r => panic!("reduction {r}"),
    }
}

fn f(args: &Value, key: &str) -> f64 {
    args[key].as_f64().unwrap()
}

/// Runs the tessera function a case names on named float inputs `a` and integer inputs `i`.
fn run_op(
    op: &str,
    args: &Value,
    a: &BTreeMap<String, Array>,
    i: &BTreeMap<String, Array>,
) -> Result<Array> {
    let flag = |k: &str| args[k].as_bool().unwrap_or(false);
    match op {
        "relu" => act::relu(&a["x"]),
        "relu6" => act::relu6(&a["x"]),
        "leaky_relu" => act::leaky_relu(&a["x"], f(args, "negative_slope")),
        "elu" => act::elu(&a["x"], f(args, "alpha")),
        "selu" => act::selu(&a["x"]),
        "gelu" => act::gelu(&a["x"]),
        "gelu_tanh" => act::gelu_tanh(&a["x"]),
        "silu" => act::silu(&a["x"]),
        "mish" => act::mish(&a["x"]),
        "softplus" => act::softplus(&a["x"], f(args, "beta"), f(args, "threshold")),
        "softsign" => act::softsign(&a["x"]),
        "sigmoid" => act::sigmoid(&a["x"]),
        "tanh" => act::tanh(&a["x"]),
        "hardswish" => act::hardswish(&a["x"]),
        "glu" => act::glu(&a["x"], args["axis"].as_i64().unwrap() as isize),
        "mse_loss" => losses::mse_loss_with(&a["p"], &a["y"], reduction(args)),
        "l1_loss" => losses::l1_loss(&a["p"], &a["y"], reduction(args)),
        "smooth_l1_loss" => {
            losses::smooth_l1_loss(&a["p"], &a["y"], f(args, "beta"), reduction(args))
        }
        "huber_loss" => losses::huber_loss(&a["p"], &a["y"], f(args, "delta"), reduction(args)),
        "cross_entropy" => {
            let y = i.get("y").unwrap_or_else(|| &a["y"]);
            let opts = CrossEntropyOptions {
                weight: flag("weight").then(|| a["cw"].clone()),
                ignore_index: args["ignore_index"].as_i64(),
                label_smoothing: f(args, "label_smoothing"),
                reduction: reduction(args),
            };
            losses::cross_entropy_with(&a["x"], y, &opts)
        }
        "nll_loss" => losses::nll_loss(
            &a["x"],
            &i["y"],
            flag("weight").then(|| &a["cw"]),
            args["ignore_index"].as_i64(),
            reduction(args),
        ),
        "binary_cross_entropy" => losses::binary_cross_entropy(
            &a["p"],
            &a["y"],
            flag("weight").then(|| &a["bw"]),
            reduction(args),
        ),
        "binary_cross_entropy_with_logits" => losses::binary_cross_entropy_with_logits(
            &a["x"],
            &a["y"],
            flag("weight").then(|| &a["bw"]),
            flag("pos_weight").then(|| &a["pw"]),
            reduction(args),
        ),
        "kl_div" => {
            let r = match args["reduction"].as_str().unwrap() {
                "none" => KlReduction::None,
                "mean" => KlReduction::Mean,
                "sum" => KlReduction::Sum,
                "batchmean" => KlReduction::BatchMean,
                r => panic!("reduction {r}"),
            };
            losses::kl_div(&a["x"], &a["y"], r, flag("log_target"))
        }
        "cosine_similarity" => losses::cosine_similarity(
            &a["a"],
            &a["b"],
            args["axis"].as_i64().unwrap() as isize,
            f(args, "eps"),
        ),
        "cosine_embedding_loss" => losses::cosine_embedding_loss(
            &a["a"],
            &a["b"],
            &i["y"],
            f(args, "margin"),
            reduction(args),
        ),
        other => panic!("no driver for {other}"),
    }
}

/// Forward and gradients of every case in `dtype`, within `rtol`/`atol` of PyTorch's float64.
fn check_all(dtype: Dtype, rtol: f64, atol: f64) -> usize {
    let doc = fixture("activations_losses.json");
    let cases = doc["cases"].as_array().unwrap();
    let mut checked = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let op = c["op"].as_str().unwrap();
        // p = 1e-50 is 0 in float32, where the clamped log differs from float64's log.
        if dtype == Dtype::F32 && name == "bce_edges" {
            continue;
        }
        let ints: BTreeMap<String, Array> = c["int_inputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), int_tensor(v)))
            .collect();
        let floats: BTreeMap<String, Array> = c["inputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), tensor(v, dtype)))
            .collect();
        let diff: Vec<String> = c["diff"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let args = &c["args"];
        let out = run_op(op, args, &floats, &ints).unwrap();
        assert_eq!(out.dtype(), dtype, "{name}: dtype");
        let expect = &c["out"];
        let data: Vec<f64> = expect["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        close(
            &format!("{name} ({dtype}) forward"),
            &out,
            &data,
            &shape_of(expect),
            rtol,
            atol,
        );
        if diff.is_empty() {
            checked += 1;
            continue;
        }
        let w = tensor(&c["w"], dtype);
        let primals: Vec<Array> = diff.iter().map(|k| floats[k].clone()).collect();
        let (_, grads) = value_and_grad(
            |xs| {
                let mut a = floats.clone();
                for (k, x) in diff.iter().zip(xs) {
                    a.insert(k.clone(), x.clone());
                }
                let y = run_op(op, args, &a, &ints)?;
                ops::sum(&ops::multiply(&y, &w)?, Axes::All, false)
            },
            &primals,
        )
        .unwrap();
        for (k, g) in diff.iter().zip(&grads) {
            let Some(e) = c["grads"].get(k) else {
                // PyTorch's gradient is not finite here (listed in skipped_grads).
                assert!(
                    c["skipped_grads"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| s == k.as_str()),
                    "{name}: no gradient for {k}"
                );
                continue;
            };
            let data: Vec<f64> = e["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            close(
                &format!("{name} ({dtype}) d/d{k}"),
                g,
                &data,
                &shape_of(e),
                rtol,
                atol,
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn match_pytorch_f64() {
    assert_eq!(check_all(Dtype::F64, 1e-10, 1e-12), 72);
}

#[test]
fn match_pytorch_f32() {
    assert_eq!(check_all(Dtype::F32, 2e-4, 2e-5), 71);
}

fn arr(v: &[f64], shape: &[usize]) -> Array {
    Array::from_slice(v, shape).unwrap()
}

#[test]
fn invalid_arguments_are_errors() {
    let x = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let e = act::glu(&x, -1).unwrap_err().to_string();
    assert!(e.contains("[glu]") && e.contains("odd"), "{e}");
    assert!(act::glu(&x, 2).is_err());
    assert!(act::glu(&x, 0).is_ok());
    assert!(act::softplus(&x, 0.0, 20.0).is_err());

    let y = arr(&[1.0, 2.0, 3.0], &[3]);
    let e = losses::mse_loss_with(&x, &y, Reduction::Mean)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[mse_loss]") && e.contains("[2, 3]") && e.contains("[3]"),
        "{e}"
    );
    assert!(losses::l1_loss(&x, &y, Reduction::Sum).is_err());
    assert!(losses::smooth_l1_loss(&x, &x, -1.0, Reduction::Mean).is_err());
    assert!(losses::huber_loss(&x, &x, 0.0, Reduction::Mean).is_err());
    assert!(losses::kl_div(&x, &y, KlReduction::BatchMean, false).is_err());
    assert!(losses::binary_cross_entropy(&x, &y, None, Reduction::Mean).is_err());
    assert!(
        losses::binary_cross_entropy_with_logits(
            &x,
            &x,
            None,
            Some(&arr(&[1.0, 2.0], &[2])),
            Reduction::Mean
        )
        .is_err()
    );

    // Cross entropy: wrong target shapes/dtypes, weights, smoothing, ignore_index on probabilities.
    let t = Array::from_slice(&[0i64, 2], &[2]).unwrap();
    assert!(losses::cross_entropy_with(&x, &t, &CrossEntropyOptions::default()).is_ok());
    let e = losses::cross_entropy_with(
        &x,
        &Array::from_slice(&[0i64, 2, 1], &[3]).unwrap(),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("[cross_entropy]") && e.contains("[3]") && e.contains("[2, 3]"),
        "{e}"
    );
    assert!(losses::cross_entropy_with(&x, &arr(&[0.0, 2.0], &[2]), &Default::default()).is_err());
    let bad_w = CrossEntropyOptions {
        weight: Some(arr(&[1.0, 2.0], &[2])),
        ..Default::default()
    };
    assert!(losses::cross_entropy_with(&x, &t, &bad_w).is_err());
    let bad_s = CrossEntropyOptions {
        label_smoothing: 1.5,
        ..Default::default()
    };
    assert!(losses::cross_entropy_with(&x, &t, &bad_s).is_err());
    let ig = CrossEntropyOptions {
        ignore_index: Some(-100),
        ..Default::default()
    };
    assert!(losses::cross_entropy_with(&x, &ops::softmax(&x, -1).unwrap(), &ig).is_err());
    assert!(losses::cross_entropy(&x, &Array::from_slice(&[0i64], &[1]).unwrap(), 0.0).is_err());
    assert!(losses::nll_loss(&x, &arr(&[0.0, 1.0], &[2]), None, None, Reduction::Mean).is_err());
    assert!(losses::cosine_similarity(&x, &y, 2, 1e-8).is_err());
    assert!(losses::cosine_similarity(&x, &arr(&[1.0, 2.0], &[2]), -1, 1e-8).is_err());
    assert!(losses::cosine_embedding_loss(&x, &x, &y, 0.0, Reduction::Mean).is_err());

    // Initialisers.
    let k = random::key(0);
    assert!(init::fan_in_and_fan_out(&[3]).is_err());
    assert!(init::glorot_uniform(&[4], Dtype::F32, 1.0, &k).is_err());
    assert!(init::he_normal(&[4, 0], Dtype::F32, FanMode::FanIn, Nonlinearity::Relu, &k).is_err());
    assert!(init::normal(&[4], Dtype::I32, 0.0, 1.0, &k).is_err());
    assert!(init::uniform(&[4], Dtype::F32, 1.0, 0.0, &k).is_err());
    assert!(init::constant(&[4], Dtype::U8, 1.0).is_err());
}

#[test]
fn ignore_all_gives_nan_and_legacy_cross_entropy_agrees() {
    let logits = arr(&[0.1, 0.9, -0.3, 2.0, 0.5, -1.0], &[2, 3]);
    let t = Array::from_slice(&[1i64, 2], &[2]).unwrap();
    let a = losses::cross_entropy(&logits, &t, 0.1)
        .unwrap()
        .item::<f64>()
        .unwrap();
    let b = losses::cross_entropy_with(
        &logits,
        &t,
        &CrossEntropyOptions {
            label_smoothing: 0.1,
            ..Default::default()
        },
    )
    .unwrap()
    .item::<f64>()
    .unwrap();
    assert_eq!(a, b);
    // Every target ignored: 0 / 0 as PyTorch.
    let all = Array::from_slice(&[-100i64, -100], &[2]).unwrap();
    let opts = CrossEntropyOptions {
        ignore_index: Some(-100),
        ..Default::default()
    };
    let v = losses::cross_entropy_with(&logits, &all, &opts)
        .unwrap()
        .item::<f64>()
        .unwrap();
    assert!(v.is_nan());
    // Unbatched logits (C,) with a scalar target.
    let one = losses::cross_entropy_with(
        &arr(&[0.1, 0.9, -0.3], &[3]),
        &Array::from_slice(&[1i64], &[]).unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(one.shape(), &[] as &[usize]);
}

#[test]
fn activations_batch_compile_and_differentiate_twice() {
    let x = Array::from_slice(&[-2.0f32, -0.5, 0.3, 1.7, 4.0, -7.0], &[2, 3]).unwrap();
    type Act = fn(&Array) -> Result<Array>;
    let fns: Vec<(&str, Act)> = vec![
        ("mish", act::mish),
        ("selu", act::selu),
        ("hardswish", act::hardswish),
        ("relu6", act::relu6),
        ("softsign", act::softsign),
        ("softplus", |x| act::softplus(x, 1.0, 20.0)),
    ];
    for (name, func) in fns {
        let eager = func(&x).unwrap().to_vec::<f32>().unwrap();
        let mapped = vmap(
            |a| Ok(vec![func(&a[0])?]),
            std::slice::from_ref(&x),
            &[Some(0)],
            &[0],
        )
        .unwrap();
        assert_eq!(mapped[0].to_vec::<f32>().unwrap(), eager, "{name} vmap");
        let c = compile(move |a: &[Array]| Ok(vec![func(&a[0])?]));
        let got = c.call(std::slice::from_ref(&x)).unwrap()[0]
            .to_vec::<f32>()
            .unwrap();
        for (g, e) in got.iter().zip(&eager) {
            assert!(
                (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                "{name} compile: {g} vs {e}"
            );
        }
    }
    // Second derivative of softplus is sigmoid' = s (1 - s).
    let x = Array::from_slice(&[0.3f64, -1.2, 2.5], &[3]).unwrap();
    let g2 = grad(
        |xs| {
            let g = grad(
                |ys| ops::sum(&act::softplus(&ys[0], 1.0, 20.0)?, Axes::All, false),
                std::slice::from_ref(&xs[0]),
            )?;
            ops::sum(&g[0], Axes::All, false)
        },
        std::slice::from_ref(&x),
    )
    .unwrap();
    for (g, v) in g2[0]
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .zip(x.to_vec::<f64>().unwrap())
    {
        let s = 1.0 / (1.0 + (-v).exp());
        assert!(
            (g - s * (1.0 - s)).abs() < 1e-12,
            "{g} vs {}",
            s * (1.0 - s)
        );
    }
    // Losses batch too: per-row cross entropy under vmap equals reduction none.
    let logits = Array::from_slice(&[0.1f32, 0.9, -0.3, 2.0, 0.5, -1.0], &[2, 3]).unwrap();
    let t = Array::from_slice(&[1i64, 2], &[2]).unwrap();
    let none = losses::cross_entropy_with(
        &logits,
        &t,
        &CrossEntropyOptions {
            reduction: Reduction::None,
            ..Default::default()
        },
    )
    .unwrap();
    let mapped = vmap(
        |a| {
            Ok(vec![losses::cross_entropy_with(
                &a[0],
                &a[1],
                &Default::default(),
            )?])
        },
        &[logits, t],
        &[Some(0), Some(0)],
        &[0],
    )
    .unwrap();
    let (m, n) = (
        mapped[0].to_vec::<f32>().unwrap(),
        none.to_vec::<f32>().unwrap(),
    );
    for (a, b) in m.iter().zip(&n) {
        assert!((a - b).abs() < 1e-6, "{m:?} vs {n:?}");
    }
}

fn stats(a: &Array) -> (f64, f64, f64, f64) {
    let v = a.astype(Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (mean, var.sqrt(), lo, hi)
}

#[test]
fn initialisers_have_the_right_statistics() {
    let gain = init::calculate_gain;
    assert_eq!(gain(Nonlinearity::Linear), 1.0);
    assert_eq!(gain(Nonlinearity::Sigmoid), 1.0);
    assert_eq!(gain(Nonlinearity::Tanh), 5.0 / 3.0);
    assert_eq!(gain(Nonlinearity::Relu), 2f64.sqrt());
    assert!((gain(Nonlinearity::LeakyRelu(0.01)) - 1.414_142_856_997_835_4).abs() < 1e-12);
    assert_eq!(gain(Nonlinearity::Selu), 0.75);

    // Fans: linear (out, in); conv channels-last (C_out, K..., C_in).
    assert_eq!(init::fan_in_and_fan_out(&[20, 30]).unwrap(), (30, 20));
    assert_eq!(init::fan_in_and_fan_out(&[16, 3, 3, 8]).unwrap(), (72, 144));
    assert_eq!(init::fan_in_and_fan_out(&[16, 5, 4]).unwrap(), (20, 80));

    let k = |i: u64| random::key(100 + i);
    let c = init::constant(&[3, 4], Dtype::F32, 0.25).unwrap();
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![0.25; 12]);

    let n = init::normal(&[200, 500], Dtype::F32, 1.5, 0.2, &k(0)).unwrap();
    let (m, s, _, _) = stats(&n);
    assert!(
        (m - 1.5).abs() < 0.005 && (s - 0.2).abs() < 0.005,
        "{m} {s}"
    );

    let u = init::uniform(&[200, 500], Dtype::F64, -2.0, 3.0, &k(1)).unwrap();
    assert_eq!(u.dtype(), Dtype::F64);
    let (m, s, lo, hi) = stats(&u);
    assert!(
        lo >= -2.0 && hi < 3.0 && lo < -1.99 && hi > 2.99,
        "{lo} {hi}"
    );
    assert!(
        (m - 0.5).abs() < 0.02 && (s - 5.0 / 12f64.sqrt()).abs() < 0.01,
        "{m} {s}"
    );

    // Glorot on a conv weight (C_out 64, 3x3, C_in 32): fan_in 288, fan_out 576.
    let shape = [64, 3, 3, 32];
    let bound = 0.5 * (6.0f64 / (288.0 + 576.0)).sqrt();
    let g = init::glorot_uniform(&shape, Dtype::F32, 0.5, &k(2)).unwrap();
    let (m, s, lo, hi) = stats(&g);
    assert!(lo >= -bound && hi <= bound && hi > 0.98 * bound && lo < -0.98 * bound);
    assert!(
        m.abs() < 0.02 * bound && (s - bound / 3f64.sqrt()).abs() < 0.02 * bound,
        "{m} {s}"
    );
    let std = 2.0 * (2.0f64 / (288.0 + 576.0)).sqrt();
    let g = init::xavier_normal(&shape, Dtype::F32, 2.0, &k(3)).unwrap();
    let (m, s, _, _) = stats(&g);
    assert!(
        m.abs() < 0.02 * std && (s - std).abs() < 0.02 * std,
        "{m} {s} {std}"
    );

    // Kaiming on a linear weight (out 300, in 400), both modes and gains.
    let shape = [300, 400];
    let b_in = 2f64.sqrt() * (3.0f64 / 400.0).sqrt();
    let h = init::he_uniform(
        &shape,
        Dtype::F32,
        FanMode::FanIn,
        Nonlinearity::Relu,
        &k(4),
    )
    .unwrap();
    let (m, s, lo, hi) = stats(&h);
    assert!(
        lo >= -b_in && hi <= b_in && hi > 0.98 * b_in,
        "{lo} {hi} {b_in}"
    );
    assert!(
        m.abs() < 0.02 * b_in && (s - b_in / 3f64.sqrt()).abs() < 0.02 * b_in,
        "{m} {s}"
    );
    let slope = 5f64.sqrt(); // nn.Linear's reset_parameters: kaiming_uniform_(a=sqrt(5))
    let b = (2.0 / (1.0 + slope * slope)).sqrt() * (3.0f64 / 400.0).sqrt();
    let h = init::kaiming_uniform(
        &shape,
        Dtype::F32,
        FanMode::FanIn,
        Nonlinearity::LeakyRelu(slope),
        &k(5),
    )
    .unwrap();
    let (_, _, lo, hi) = stats(&h);
    assert!(
        (b - 1.0 / 400f64.sqrt()).abs() < 1e-12,
        "the bound is 1/sqrt(fan_in)"
    );
    assert!(lo >= -b && hi <= b && hi > 0.98 * b);
    let std_out = (5.0 / 3.0) / 300f64.sqrt();
    let h = init::he_normal(
        &shape,
        Dtype::F64,
        FanMode::FanOut,
        Nonlinearity::Tanh,
        &k(6),
    )
    .unwrap();
    let (m, s, _, _) = stats(&h);
    assert!(
        m.abs() < 0.02 * std_out && (s - std_out).abs() < 0.02 * std_out,
        "{m} {s}"
    );
    let h = init::kaiming_normal(
        &[32, 5, 16],
        Dtype::F32,
        FanMode::FanIn,
        Nonlinearity::Linear,
        &k(7),
    )
    .unwrap();
    let (_, s, _, _) = stats(&h);
    let want = 1.0 / 80f64.sqrt();
    assert!((s - want).abs() < 0.03 * want, "{s} {want}");

    // Same key, same values; different keys differ.
    let a = init::he_normal(
        &[8, 8],
        Dtype::F32,
        FanMode::FanIn,
        Nonlinearity::Relu,
        &k(9),
    )
    .unwrap();
    let b = init::he_normal(
        &[8, 8],
        Dtype::F32,
        FanMode::FanIn,
        Nonlinearity::Relu,
        &k(9),
    )
    .unwrap();
    let c = init::he_normal(
        &[8, 8],
        Dtype::F32,
        FanMode::FanIn,
        Nonlinearity::Relu,
        &k(10),
    )
    .unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert_ne!(a.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap());
}
