//! The remaining optimizers against PyTorch's update formulas written out for one scalar,
//! schedules at known steps, and gradient clipping.

use tessera_core::Array;
use tessera_core::transforms::Params;
use tessera_nn::optim::{
    AdaDelta, Adagrad, Adamax, Lion, Optimizer, RmsProp, clip_grad_norm, schedules,
};

fn one(v: f64) -> Params {
    let mut p = Params::new();
    p.insert("w".into(), Array::from_slice(&[v], &[1]).unwrap());
    p
}

/// Runs `opt` for the gradients `gs` from p0 and compares each step with `reference`.
fn check(
    name: &str,
    opt: &mut dyn Optimizer,
    p0: f64,
    gs: &[f64],
    mut reference: impl FnMut(f64, f64, i32) -> f64,
) {
    let mut params = one(p0);
    let mut p = p0;
    for (t, &g) in gs.iter().enumerate() {
        params = opt.update(&params, &one(g)).unwrap();
        p = reference(p, g, t as i32 + 1);
        let got = params["w"].item::<f64>().unwrap();
        assert!(
            (got - p).abs() < 1e-12,
            "{name} step {}: {got} vs {p}",
            t + 1
        );
    }
}

const GS: [f64; 4] = [0.3, -0.2, 0.7, 0.05];

#[test]
fn rmsprop_plain_centered_momentum() {
    let (mut v, mut m, mut b) = (0.0, 0.0, 0.0);
    check("rmsprop", &mut RmsProp::new(0.01), 1.0, &GS, |p, g, _| {
        v = 0.99 * v + 0.01 * g * g;
        p - 0.01 * g / (v.sqrt() + 1e-8)
    });
    let mut o = RmsProp::new(0.01);
    o.centered = true;
    o.momentum = 0.9;
    v = 0.0;
    check("rmsprop centered momentum", &mut o, 1.0, &GS, |p, g, _| {
        v = 0.99 * v + 0.01 * g * g;
        m = 0.99 * m + 0.01 * g;
        b = 0.9 * b + g / ((v - m * m).sqrt() + 1e-8);
        p - 0.01 * b
    });
}

#[test]
fn adagrad_adamax_lion_adadelta() {
    let mut sum = 0.0;
    let mut o = Adagrad::new(0.1);
    o.lr_decay = 0.01;
    check("adagrad", &mut o, 1.0, &GS, |p, g, t| {
        sum += g * g;
        p - 0.1 / (1.0 + (t - 1) as f64 * 0.01) * g / (sum.sqrt() + 1e-10)
    });
    let (mut m, mut u) = (0.0f64, 0.0f64);
    check("adamax", &mut Adamax::new(0.002), 1.0, &GS, |p, g, t| {
        m = 0.9 * m + 0.1 * g;
        u = (0.999 * u).max(g.abs() + 1e-8);
        p - 0.002 / (1.0 - 0.9f64.powi(t)) * m / u
    });
    let mut lm = 0.0f64;
    let mut lion = Lion::new(1e-3);
    lion.weight_decay = 0.1;
    check("lion", &mut lion, 1.0, &GS, |p, g, _| {
        let c = 0.9 * lm + 0.1 * g;
        lm = 0.99 * lm + 0.01 * g;
        p * (1.0 - 1e-3 * 0.1) - 1e-3 * c.signum()
    });
    let (mut v, mut acc) = (0.0f64, 0.0f64);
    check("adadelta", &mut AdaDelta::new(1.0), 1.0, &GS, |p, g, _| {
        v = 0.9 * v + 0.1 * g * g;
        let d = ((acc + 1e-6).sqrt() / (v + 1e-6).sqrt()) * g;
        acc = 0.9 * acc + 0.1 * d * d;
        p - d
    });
}

#[test]
fn schedules_and_clipping() {
    let s = schedules::step_decay(0.1, 0.5, 10);
    assert_eq!((s(0), s(9), s(10), s(25)), (0.1, 0.1, 0.05, 0.025));
    let c = schedules::cosine_decay(1.0, 100, 0.0);
    assert!(
        (c(0) - 1.0).abs() < 1e-15
            && (c(50) - 0.5).abs() < 1e-12
            && c(100).abs() < 1e-15
            && c(500).abs() < 1e-15
    );
    let e = schedules::exponential_decay(2.0, 0.9);
    assert!((e(2) - 1.62).abs() < 1e-12);
    let warm = schedules::join(
        vec![
            schedules::linear(0.0, 1.0, 10),
            schedules::cosine_decay(1.0, 90, 0.1),
        ],
        vec![10],
    );
    assert!(
        (warm(5) - 0.5).abs() < 1e-12
            && (warm(10) - 1.0).abs() < 1e-12
            && (warm(100) - 0.1).abs() < 1e-12
    );

    let mut g = Params::new();
    g.insert("a".into(), Array::from_slice(&[3.0f32, 0.0], &[2]).unwrap());
    g.insert("b".into(), Array::from_slice(&[4.0f32], &[1]).unwrap());
    let (clipped, norm) = clip_grad_norm(&g, 1.0).unwrap();
    assert!((norm.item::<f32>().unwrap() - 5.0).abs() < 1e-6);
    let a = clipped["a"].to_vec::<f32>().unwrap();
    assert!((a[0] - 0.6).abs() < 1e-6 && (clipped["b"].item::<f32>().unwrap() - 0.8).abs() < 1e-6);
    let (same, _) = clip_grad_norm(&g, 10.0).unwrap();
    assert_eq!(same["b"].item::<f32>().unwrap(), 4.0);
}
