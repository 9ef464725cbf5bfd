//! `tessera bench train`: training steps and element-wise chains.

use crate::{Body, Case};
use tessera_core::ops::{self};
use tessera_core::{Array, Dtype, random};
use tessera_nn::optim::{Optimizer, Sgd};
use tessera_nn::{Module, activations, layers::Mlp, losses, value_and_grad};

fn ok<T>(r: tessera_core::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("bench case failed: {e}"))
}

pub fn train_cases() -> Vec<Case> {
    vec![
        // 784-512-512-10 MLP, batch 256, cross-entropy, plain SGD: one full step per run.
        Case {
            name: "mlp_step".into(),
            unit: "steps/s",
            setup: Box::new(|| {
                let key = random::key(0);
                let x = ok(random::normal(
                    &[256, 784],
                    Dtype::F32,
                    0.0,
                    1.0,
                    Some(&key),
                ));
                let y = ok(ok(random::randint(
                    0,
                    10,
                    &[256],
                    Dtype::I32,
                    Some(&random::key(1)),
                ))
                .astype(Dtype::I32));
                ok(tessera_core::eval(&[x.clone(), y.clone()]));
                let mut model = ok(Mlp::new(
                    &[784, 512, 512, 10],
                    activations::relu,
                    &random::key(2),
                ));
                ok(tessera_core::eval(
                    &model.parameters().values().cloned().collect::<Vec<_>>(),
                ));
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
                let key = random::key(0);
                let x = ok(random::normal(
                    &[256, 784],
                    Dtype::F32,
                    0.0,
                    1.0,
                    Some(&key),
                ));
                let y = ok(ok(random::randint(
                    0,
                    10,
                    &[256],
                    Dtype::I32,
                    Some(&random::key(1)),
                ))
                .astype(Dtype::I32));
                ok(tessera_core::eval(&[x.clone(), y.clone()]));
                let model = ok(Mlp::new(
                    &[784, 512, 512, 10],
                    activations::relu,
                    &random::key(2),
                ));
                let names: Vec<String> = model.parameters().keys().cloned().collect();
                let mut params: Vec<Array> = model.parameters().values().cloned().collect();
                ok(tessera_core::eval(&params));
                let step = tessera_core::transforms::compile(move |xs: &[Array]| {
                    let (x, y) = (&xs[0], &xs[1]);
                    let p: tessera_core::transforms::Params =
                        names.iter().cloned().zip(xs[2..].iter().cloned()).collect();
                    let (loss, grads) = tessera_core::transforms::value_and_grad_params(
                        |q| {
                            let mut m = model.clone();
                            m.load_parameters(q)?;
                            losses::cross_entropy(&m.forward(x)?, y, 0.0)
                        },
                        &p,
                    )?;
                    let mut out = vec![loss];
                    for (k, v) in &p {
                        out.push(ops::subtract(
                            v,
                            &ops::multiply(&grads[k], &Array::scalar(0.01f32))?,
                        )?);
                    }
                    Ok(out)
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
        // The same ten ops compiled: one fused kernel, one pass over memory.
        Case {
            name: "chain10_compiled_16M".into(),
            unit: "ms",
            setup: Box::new(|| {
                let x = ok(random::uniform(
                    -1.0,
                    1.0,
                    &[16 << 20],
                    Dtype::F32,
                    Some(&random::key(3)),
                ));
                ok(x.eval());
                let f = tessera_core::transforms::compile(|xs: &[Array]| {
                    let mut y = xs[0].clone();
                    for i in 0..10 {
                        y = match i % 3 {
                            0 => ops::multiply(&y, &Array::scalar(1.01f32))?,
                            1 => ops::add(&y, &Array::scalar(0.5f32))?,
                            _ => ops::tanh(&y)?,
                        };
                    }
                    Ok(vec![y])
                });
                Body::timed(
                    move || ok(ok(f.call(std::slice::from_ref(&x)))[0].eval()),
                    1.0,
                )
            }),
        },
        // One in-place-sized add over the same data: the one-pass reference for the compiled chain.
        Case {
            name: "add_f32_16M_reference".into(),
            unit: "ms",
            setup: Box::new(|| {
                let x = ok(random::uniform(
                    -1.0,
                    1.0,
                    &[16 << 20],
                    Dtype::F32,
                    Some(&random::key(3)),
                ));
                ok(x.eval());
                Body::timed(
                    move || ok(ok(ops::add(&x, &Array::scalar(0.5f32))).eval()),
                    1.0,
                )
            }),
        },
        // Ten element-wise ops over 16M f32, evaluated eagerly (one pass per op).
        Case {
            name: "chain10_eager_16M".into(),
            unit: "ms",
            setup: Box::new(|| {
                let x = ok(random::uniform(
                    -1.0,
                    1.0,
                    &[16 << 20],
                    Dtype::F32,
                    Some(&random::key(3)),
                ));
                ok(x.eval());
                Body::timed(
                    move || {
                        let mut y = x.clone();
                        for i in 0..10 {
                            y = match i % 3 {
                                0 => ok(ops::multiply(&y, &Array::scalar(1.01f32))),
                                1 => ok(ops::add(&y, &Array::scalar(0.5f32))),
                                _ => ok(ops::tanh(&y)),
                            };
                            ok(y.eval());
                        }
                    },
                    1.0,
                )
            }),
        },
    ]
}
