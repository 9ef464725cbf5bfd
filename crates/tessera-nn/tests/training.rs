//! Optimizer rules against hand-written PyTorch formulas, losses against direct computation, and
//! an MLP that actually learns.

use tessera_core::ops::{self, Axes};
use tessera_core::transforms::Params;
use tessera_core::{Array, Dtype, random};
use tessera_nn::layers::{Linear, Mlp};
use tessera_nn::optim::{Adam, Optimizer, Sgd};
use tessera_nn::{Module, activations, losses, value_and_grad};

fn one(v: f64) -> Params {
    let mut p = Params::new();
    p.insert("w".into(), Array::from_slice(&[v], &[1]).unwrap());
    p
}

fn val(p: &Params) -> f64 {
    p["w"].item::<f64>().unwrap()
}

#[test]
fn sgd_matches_pytorch_rule() {
    // torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), grads 1.0 then 0.5.
    let mut opt = Sgd::new(0.1).momentum(0.9, true).weight_decay(0.01);
    let (mut p, mut buf) = (2.0f64, None::<f64>);
    let mut params = one(p);
    for g in [1.0f64, 0.5] {
        params = opt.update(&params, &one(g)).unwrap();
        let g = g + 0.01 * p;
        let b = match buf {
            None => g,
            Some(b) => 0.9 * b + g,
        };
        buf = Some(b);
        p -= 0.1 * (g + 0.9 * b);
        assert!((val(&params) - p).abs() < 1e-14, "{} vs {p}", val(&params));
    }
}

#[test]
fn adam_and_adamw_match_pytorch_rule() {
    for decoupled in [false, true] {
        let mut opt = if decoupled {
            Adam::adamw(0.01, 0.1)
        } else {
            Adam::new(0.01).weight_decay(0.1)
        };
        let (mut p, mut m, mut v) = (1.5f64, 0.0f64, 0.0f64);
        let mut params = one(p);
        for (t, g0) in [0.3f64, -0.2, 0.7].into_iter().enumerate() {
            params = opt.update(&params, &one(g0)).unwrap();
            let t = (t + 1) as i32;
            let mut g = g0;
            if decoupled {
                p *= 1.0 - 0.01 * 0.1;
            } else {
                g += 0.1 * p;
            }
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let (c1, c2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
            p -= 0.01 / c1 * m / ((v.sqrt() / c2.sqrt()) + 1e-8);
            assert!(
                (val(&params) - p).abs() < 1e-13,
                "decoupled={decoupled} step {t}: {} vs {p}",
                val(&params)
            );
        }
    }
}

#[test]
fn cross_entropy_matches_direct_computation() {
    let logits = Array::from_slice(&[1.0f64, 2.0, 0.5, -1.0, 0.0, 3.0], &[2, 3]).unwrap();
    let t = Array::from_slice(&[1i32, 2], &[2]).unwrap();
    let lse = |r: &[f64]| r.iter().map(|x| x.exp()).sum::<f64>().ln();
    let rows = [[1.0f64, 2.0, 0.5], [-1.0, 0.0, 3.0]];
    let nll = [lse(&rows[0]) - 2.0, lse(&rows[1]) - 3.0];
    let plain = losses::cross_entropy(&logits, &t, 0.0)
        .unwrap()
        .item::<f64>()
        .unwrap();
    assert!((plain - (nll[0] + nll[1]) / 2.0).abs() < 1e-12);
    // Label smoothing 0.1: (1 - e) * nll + e * mean_c(-log p_c).
    let smooth: Vec<f64> = rows
        .iter()
        .map(|r| r.iter().map(|x| lse(r) - x).sum::<f64>() / 3.0)
        .collect();
    let expect = (0..2).map(|i| 0.9 * nll[i] + 0.1 * smooth[i]).sum::<f64>() / 2.0;
    let got = losses::cross_entropy(&logits, &t, 0.1)
        .unwrap()
        .item::<f64>()
        .unwrap();
    assert!((got - expect).abs() < 1e-12);
    assert!(
        losses::cross_entropy(&logits, &Array::from_slice(&[1i32], &[1]).unwrap(), 0.0).is_err()
    );
}

#[test]
fn parameters_round_trip_by_name() {
    let mut m = Mlp::new(&[3, 4, 2], activations::relu, &random::key(0)).unwrap();
    let p = m.parameters();
    let names: Vec<&str> = p.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "layers.0.bias",
            "layers.0.weight",
            "layers.1.bias",
            "layers.1.weight"
        ]
    );
    assert_eq!(p["layers.0.weight"].shape(), &[4, 3]);
    m.load_parameters(&p).unwrap();
    let mut bad = Params::new();
    bad.insert(
        "layers.0.weight".into(),
        ops::zeros(&[3, 4], Dtype::F32).unwrap(),
    );
    assert!(m.load_parameters(&bad).is_err());
    bad.clear();
    bad.insert(
        "layers.7.weight".into(),
        ops::zeros(&[4, 3], Dtype::F32).unwrap(),
    );
    assert!(m.load_parameters(&bad).is_err());
    let _ = Linear::new(2, 2, false, &random::key(1)).unwrap();
}

/// Two interleaved spirals are not linearly separable: a small MLP trained with Adam must learn
/// them (a linear model stays near 50%).
#[test]
fn mlp_learns_two_spirals() {
    let n = 256;
    let mut xs = Vec::with_capacity(2 * n);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 2;
        let t = (i / 2) as f64 / (n / 2) as f64 * 3.0 + 0.3;
        let sign = if class == 0 { 1.0 } else { -1.0 };
        xs.push((sign * t * t.cos()) as f32 / 3.0);
        xs.push((sign * t * t.sin()) as f32 / 3.0);
        ys.push(class as i32);
    }
    let x = Array::from_slice(&xs, &[n, 2]).unwrap();
    let y = Array::from_slice(&ys, &[n]).unwrap();
    let mut model = Mlp::new(&[2, 64, 64, 2], activations::tanh, &random::key(3)).unwrap();
    let mut opt = Adam::new(0.01);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..400 {
        let (loss, grads) =
            value_and_grad(&model, |m| losses::cross_entropy(&m.forward(&x)?, &y, 0.0)).unwrap();
        let new = opt.update(&model.parameters(), &grads).unwrap();
        let mut all: Vec<Array> = new.values().cloned().collect();
        all.extend(opt.state());
        all.push(loss.clone());
        tessera_core::eval(&all).unwrap();
        model.load_parameters(&new).unwrap();
        last = loss.item::<f32>().unwrap();
        first.get_or_insert(last);
    }
    let pred = ops::argmax(&model.forward(&x).unwrap(), Some(1), false).unwrap();
    let acc = ops::mean(
        &ops::equal(&pred.astype(Dtype::I32).unwrap(), &y).unwrap(),
        Axes::All,
        false,
    )
    .unwrap()
    .item::<f32>()
    .unwrap();
    eprintln!("two spirals: loss {first:?} -> {last}, accuracy {acc}");
    assert!(
        last < 0.2 * first.unwrap_or(1.0),
        "loss {first:?} -> {last}"
    );
    assert!(acc > 0.95, "accuracy {acc}");
}
