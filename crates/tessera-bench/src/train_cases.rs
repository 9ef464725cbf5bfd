//! `tessera bench train`: training steps and element-wise chains.

use crate::{Body, Case};
use tessera_core::ops;
use tessera_core::transforms::{Params, compile, value_and_grad_params};
use tessera_core::{Array, Dtype, Result, random};
use tessera_nn::optim::{Optimizer, Sgd};
use tessera_nn::{Module, activations, layers::Mlp, losses, value_and_grad};

fn ok<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("bench case failed: {e}"))
}

/// The mlp_step problem: a batch of 256 inputs (784 features), class labels, and a
/// 784-512-512-10 ReLU MLP, all evaluated.
fn mlp_problem() -> (Array, Array, Mlp) {
    let x = ok(random::normal(
        &[256, 784],
        Dtype::F32,
        0.0,
        1.0,
        Some(&random::key(0)),
    ));
    let y = ok(random::randint(
        0,
        10,
        &[256],
        Dtype::I32,
        Some(&random::key(1)),
    ));
    let model = ok(Mlp::new(
        &[784, 512, 512, 10],
        activations::relu,
        &random::key(2),
    ));
    let mut all = vec![x.clone(), y.clone()];
    all.extend(model.parameters().into_values());
    ok(tessera_core::eval(&all));
    (x, y, model)
}

/// 16M evaluated f32 values for the element-wise cases.
fn input_16m() -> Array {
    let x = ok(random::uniform(
        -1.0,
        1.0,
        &[16 << 20],
        Dtype::F32,
        Some(&random::key(3)),
    ));
    ok(x.eval());
    x
}

/// Op `i` of the ten-op chain (the mix `scripts/bench_train_peers.py` also runs).
fn chain_op(i: usize, y: &Array) -> Result<Array> {
    match i % 3 {
        0 => ops::multiply(y, &Array::scalar(1.01f32)),
        1 => ops::add(y, &Array::scalar(0.5f32)),
        _ => ops::tanh(y),
    }
}

fn cheap_chain_op(i: usize, y: &Array) -> Result<Array> {
    match i % 5 {
        0 => ops::multiply(y, &Array::scalar(1.01f32)),
        1 => ops::add(y, &Array::scalar(0.5f32)),
        2 => ops::maximum(y, &Array::scalar(-0.9f32)),
        3 => ops::minimum(y, &Array::scalar(2.0f32)),
        _ => ops::subtract(y, &Array::scalar(0.25f32)),
    }
}

/// Ten ops `op(0..10)` over 16M f32 under `compile` (one fused kernel), in ms.
fn compiled_chain_case(name: &str, op: fn(usize, &Array) -> Result<Array>) -> Case {
    Case {
        name: name.into(),
        unit: "ms",
        setup: Box::new(move || {
            let x = input_16m();
            let f = compile(move |xs: &[Array]| {
                let mut y = xs[0].clone();
                for i in 0..10 {
                    y = op(i, &y)?;
                }
                Ok(vec![y])
            });
            Body::timed(
                move || ok(ok(f.call(std::slice::from_ref(&x)))[0].eval()),
                1.0,
            )
        }),
    }
}

pub fn train_cases() -> Vec<Case> {
    vec![
        // 784-512-512-10 MLP, batch 256, cross-entropy, plain SGD: one full step per run.
        Case {
            name: "mlp_step".into(),
            unit: "steps/s",
            setup: Box::new(|| {
                let (x, y, mut model) = mlp_problem();
                let mut opt = Sgd::new(0.01);
                Body::timed(
                    move || {
                        let (loss, grads) = ok(value_and_grad(&model, |m| {
                            losses::cross_entropy(&m.forward(&x)?, &y, 0.0)
                        }));
                        let new = ok(opt.update(&model.parameters(), &grads));
                        let mut all: Vec<Array> = new.values().cloned().collect();
                        all.push(loss);
                        ok(tessera_core::eval(&all));
                        ok(model.load_parameters(&new));
                    },
                    1.0,
                )
            }),
        },
        // The same step with the whole update compiled (element-wise passes fused).
        Case {
            name: "mlp_step_compiled".into(),
            unit: "steps/s",
            setup: Box::new(|| {
                let (x, y, model) = mlp_problem();
                let names: Vec<String> = model.parameters().keys().cloned().collect();
                let mut params: Vec<Array> = model.parameters().into_values().collect();
                // Inputs: x, y, then the parameters by name; outputs: loss, then new parameters.
                let step = compile(move |xs: &[Array]| {
                    let p: Params = names.iter().cloned().zip(xs[2..].iter().cloned()).collect();
                    let (loss, grads) = value_and_grad_params(
                        |q| {
                            let mut m = model.clone();
                            m.load_parameters(q)?;
                            losses::cross_entropy(&m.forward(&xs[0])?, &xs[1], 0.0)
                        },
                        &p,
                    )?;
                    // Plain SGD keeps no state, so a fresh optimizer per trace is the same rule.
                    let new = Sgd::new(0.01).update(&p, &grads)?;
                    Ok(std::iter::once(loss).chain(new.into_values()).collect())
                });
                Body::timed(
                    move || {
                        let mut ins = vec![x.clone(), y.clone()];
                        ins.extend(params.iter().cloned());
                        let outs = ok(step.call(&ins));
                        ok(tessera_core::eval(&outs));
                        params = outs[1..].to_vec();
                    },
                    1.0,
                )
            }),
        },
        // The ten-op chain compiled: one fused kernel, one pass over memory.
        compiled_chain_case("chain10_compiled_16M", chain_op),
        // Ten cheap ops (multiply, add, maximum, minimum, subtract) compiled: what the fusion
        // machinery costs when the arithmetic itself is negligible (chain10 has three tanh,
        // which are compute-bound).
        compiled_chain_case("chain10_cheap_compiled_16M", cheap_chain_op),
        // One add over the same data: the one-pass reference for the compiled chain.
        Case {
            name: "add_f32_16M_reference".into(),
            unit: "ms",
            setup: Box::new(|| {
                let x = input_16m();
                Body::timed(
                    move || ok(ok(ops::add(&x, &Array::scalar(0.5f32))).eval()),
                    1.0,
                )
            }),
        },
        // The ten-op chain evaluated eagerly (one pass per op).
        Case {
            name: "chain10_eager_16M".into(),
            unit: "ms",
            setup: Box::new(|| {
                let x = input_16m();
                Body::timed(
                    move || {
                        let mut y = x.clone();
                        for i in 0..10 {
                            y = ok(chain_op(i, &y));
                            ok(y.eval());
                        }
                    },
                    1.0,
                )
            }),
        },
    ]
}
