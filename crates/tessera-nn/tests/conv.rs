//! Convolutions and pooling against PyTorch: forward values and the gradients of sum(out * w)
//! with respect to the input, the weight and the bias (tests/fixtures/nn/conv.json, written by
//! scripts/gen-nn-conv-fixtures.py in float64, channels last). Every case runs in float64
//! (relative 1e-9: the fixture keeps 10 digits) and float32 (2e-5). Plus a finite-difference
//! check, the layers, the weight conversion from PyTorch's layout, errors, compile and vmap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::fixture;
use serde_json::Value;
use std::collections::BTreeMap;
use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{self, Params, value_and_grad};
use tessera_core::{Array, Dtype, Result, random};
use tessera_nn::Module;
use tessera_nn::conv::{self, ConvOptions};
use tessera_nn::pool;

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

fn close(name: &str, a: &Array, e: &Array, tol: f64) {
    assert_eq!(a.shape(), e.shape(), "{name}: shape");
    let a = a.astype(Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    let e = e.to_vec::<f64>().unwrap();
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "{name}[{i}]: {x} vs torch {y}"
        );
    }
}

/// A fixture argument: a number (same for every dim) or a list.
fn dims<const D: usize>(v: &Value) -> [usize; D] {
    match v.as_array() {
        Some(a) => {
            let mut r = [0; D];
            for (i, x) in a.iter().enumerate() {
                r[i] = x.as_u64().unwrap() as usize;
            }
            r
        }
        None => [v.as_u64().unwrap() as usize; D],
    }
}

fn run_op<const D: usize>(op: &str, args: &Value, a: &BTreeMap<String, Array>) -> Result<Array> {
    let g = args["groups"].as_u64().unwrap_or(1) as usize;
    let add_bias = |y: Array| match a.get("bias") {
        Some(b) => ops::add(&y, b),
        None => Ok(y),
    };
    let x = &a["x"];
    match op {
        "conv" => add_bias(conv::conv_nd::<D>(
            x,
            &a["weight"],
            dims(&args["stride"]),
            dims(&args["padding"]),
            dims(&args["dilation"]),
            g,
        )?),
        "conv_transpose" => add_bias(conv::conv_transpose_nd::<D>(
            x,
            &a["weight"],
            dims(&args["stride"]),
            dims(&args["padding"]),
            dims(&args["dilation"]),
            dims(&args["output_padding"]),
            g,
        )?),
        "max_pool" => pool::max_pool_nd::<D>(
            x,
            dims(&args["kernel"]),
            dims(&args["stride"]),
            dims(&args["padding"]),
        ),
        "avg_pool" => pool::avg_pool_nd::<D>(
            x,
            dims(&args["kernel"]),
            dims(&args["stride"]),
            dims(&args["padding"]),
            args["count_include_pad"].as_bool().unwrap(),
        ),
        other => panic!("no driver for {other}"),
    }
}

/// The 1-d/2-d public functions, to exercise their argument conversions as well.
fn run_public(op: &str, args: &Value, a: &BTreeMap<String, Array>) -> Result<Array> {
    let (base, d) = op.split_at(op.len() - 2);
    let u = |k: &str| args[k].as_u64().map(|v| v as usize);
    let g = u("groups").unwrap_or(1);
    if d == "1d" {
        let x = &a["x"];
        let y = match base {
            "conv" => conv::conv1d(
                x,
                &a["weight"],
                u("stride").unwrap(),
                u("padding").unwrap(),
                u("dilation").unwrap(),
                g,
            )?,
            "conv_transpose" => conv::conv_transpose1d(
                x,
                &a["weight"],
                u("stride").unwrap(),
                u("padding").unwrap(),
                u("dilation").unwrap(),
                u("output_padding").unwrap(),
                g,
            )?,
            "max_pool" => {
                return pool::max_pool1d(
                    x,
                    u("kernel").unwrap(),
                    u("stride").unwrap(),
                    u("padding").unwrap(),
                );
            }
            "avg_pool" => {
                return pool::avg_pool1d(
                    x,
                    u("kernel").unwrap(),
                    u("stride").unwrap(),
                    u("padding").unwrap(),
                    args["count_include_pad"].as_bool().unwrap(),
                );
            }
            _ => panic!("{op}"),
        };
        return match a.get("bias") {
            Some(b) => ops::add(&y, b),
            None => Ok(y),
        };
    }
    let p = |k: &str| dims::<2>(&args[k]);
    let x = &a["x"];
    let y = match base {
        "conv" => conv::conv2d(x, &a["weight"], p("stride"), p("padding"), p("dilation"), g)?,
        "conv_transpose" => conv::conv_transpose2d(
            x,
            &a["weight"],
            p("stride"),
            p("padding"),
            p("dilation"),
            p("output_padding"),
            g,
        )?,
        "max_pool" => return pool::max_pool2d(x, p("kernel"), p("stride"), p("padding")),
        "avg_pool" => {
            return pool::avg_pool2d(
                x,
                p("kernel"),
                p("stride"),
                p("padding"),
                args["count_include_pad"].as_bool().unwrap(),
            );
        }
        _ => panic!("{op}"),
    };
    match a.get("bias") {
        Some(b) => ops::add(&y, b),
        None => Ok(y),
    }
}

#[test]
fn conv_and_pool_match_pytorch() {
    let doc = fixture("conv.json");
    let cases = doc["cases"].as_array().unwrap();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let op = c["op"].as_str().unwrap();
        let args = &c["args"];
        let (base, d) = op.split_at(op.len() - 2);
        for (dtype, tol) in [(Dtype::F64, 1e-9), (Dtype::F32, 2e-5)] {
            let mut names = vec![];
            let mut values = vec![];
            for (k, v) in c["inputs"].as_object().unwrap() {
                names.push(k.clone());
                values.push(tensor(v).astype(dtype).unwrap());
            }
            let f = |a: &BTreeMap<String, Array>| -> Result<Array> {
                if d == "1d" {
                    run_op::<1>(base, args, a)
                } else {
                    run_op::<2>(base, args, a)
                }
            };
            let w = tensor(&c["w"]).astype(dtype).unwrap();
            let (loss, grads) = value_and_grad(
                |xs| {
                    let a: BTreeMap<String, Array> =
                        names.iter().cloned().zip(xs.iter().cloned()).collect();
                    ops::sum(&ops::multiply(&f(&a)?, &w)?, Axes::All, false)
                },
                &values,
            )
            .unwrap();
            assert_eq!(loss.dtype(), dtype);
            let a: BTreeMap<String, Array> =
                names.iter().cloned().zip(values.iter().cloned()).collect();
            let out = f(&a).unwrap();
            assert_eq!(out.dtype(), dtype, "{name}");
            let tag = format!("{name} ({dtype})");
            close(&format!("{tag} forward"), &out, &tensor(&c["out"]), tol);
            close(
                &format!("{tag} public forward"),
                &run_public(op, args, &a).unwrap(),
                &tensor(&c["out"]),
                tol,
            );
            for (k, g) in names.iter().zip(&grads) {
                close(&format!("{tag} d/d{k}"), g, &tensor(&c["grads"][k]), tol);
            }
        }
    }
    assert_eq!(cases.len(), 31);
}

#[test]
fn transposed_weights_convert_from_pytorch() {
    let doc = fixture("conv.json");
    let mut n = 0;
    for c in doc["cases"].as_array().unwrap() {
        if let Some(wt) = c.get("weight_torch") {
            let g = c["args"]["groups"].as_u64().unwrap() as usize;
            let w = conv::conv_transpose_weight_from_pytorch(&tensor(wt), g).unwrap();
            close("converted", &w, &tensor(&c["inputs"]["weight"]), 0.0);
            n += 1;
        }
    }
    assert_eq!(n, 2);
    // Conv weights: axis 1 to the end.
    let w = ops::reshape(
        &ops::arange(0.0, 24.0, 1.0, Dtype::F32).unwrap(),
        &[2, 3, 2, 2],
    )
    .unwrap();
    let c = conv::conv_weight_from_pytorch(&w).unwrap();
    assert_eq!(c.shape(), &[2, 2, 2, 3]);
    assert_eq!(
        c.to_vec::<f32>().unwrap()[..6],
        [0.0, 4.0, 8.0, 1.0, 5.0, 9.0]
    );
    assert!(conv::conv_transpose_weight_from_pytorch(&w, 4).is_err());
}

fn rand(shape: &[usize], seed: u64) -> Array {
    random::normal(shape, Dtype::F64, 0.0, 1.0, Some(&random::key(seed))).unwrap()
}

/// Central differences of `f` at every element of every argument against the gradient.
fn finite_difference_check(f: impl Fn(&[Array]) -> Result<Array>, args: &[Array]) {
    let grads = transforms::grad(&f, args).unwrap();
    let h = 1e-6;
    for (ai, a) in args.iter().enumerate() {
        let base = a.to_vec::<f64>().unwrap();
        let g = grads[ai].to_vec::<f64>().unwrap();
        for i in 0..base.len() {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut xs = args.to_vec();
                xs[ai] = Array::from_slice(&v, a.shape()).unwrap();
                f(&xs).unwrap().item::<f64>().unwrap()
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() <= 1e-6 * fd.abs().max(1.0),
                "argument {ai}[{i}]: finite difference {fd} vs gradient {}",
                g[i]
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences_f64() {
    let x = rand(&[2, 5, 6, 4], 1);
    let w = rand(&[6, 3, 2, 2], 2);
    let wt = rand(&[4, 2, 3, 3], 3);
    let r = rand(&[2, 3, 5, 4], 4);
    // conv2d (stride, padding, dilation, groups) -> conv_transpose2d -> max pool, weighted sum.
    let f = |a: &[Array]| -> Result<Array> {
        let y = conv::conv2d(&a[0], &a[1], (2, 1), 1, (1, 2), 2)?;
        let y = ops::tanh(&y)?; // (2, 3, 6, 6)
        let z = conv::conv_transpose2d(&y, &a[2], 2, 1, 1, 1, 2)?; // (2, 6, 12, 4)
        let p = pool::max_pool2d(&z, 3, 2, 1)?; // (2, 3, 6, 4)
        let q = pool::avg_pool2d(&p, (1, 2), (1, 1), 0, true)?; // (2, 3, 5, 4)
        ops::sum(&ops::multiply(&q, &r)?, Axes::All, false)
    };
    finite_difference_check(f, &[x, w, wt]);
}

#[test]
fn layers_forward_and_parameters() {
    let key = random::key(7);
    let c = conv::Conv2d::new(
        4,
        6,
        (3, 2),
        true,
        ConvOptions::default().stride(2).padding(1).groups(2),
        &key,
    )
    .unwrap();
    assert_eq!(c.weight.shape(), &[6, 3, 2, 2]);
    let bound = 1.0 / ((2 * 3 * 2) as f32).sqrt();
    assert!(
        c.weight
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.abs() <= bound)
    );
    let names: Vec<String> = c.parameters().keys().cloned().collect();
    assert_eq!(names, ["bias", "weight"]);
    let x = rand(&[2, 7, 5, 4], 9).astype(Dtype::F32).unwrap();
    let y = c.forward(&x).unwrap();
    let want = ops::add(
        &conv::conv2d(&x, &c.weight, 2, 1, 1, 2).unwrap(),
        c.bias.as_ref().unwrap(),
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 4, 3, 6]);
    close("Conv2d", &y, &want.astype(Dtype::F64).unwrap(), 0.0);

    // load_parameters checks names and shapes.
    let mut c2 = c.clone();
    let mut p = Params::new();
    p.insert(
        "weight".into(),
        ops::zeros(&[6, 3, 2, 2], Dtype::F32).unwrap(),
    );
    c2.load_parameters(&p).unwrap();
    // A zero weight leaves the bias at every position.
    let want = ops::broadcast_to(c2.bias.as_ref().unwrap(), &[2, 4, 3, 6]).unwrap();
    close(
        "zero weight",
        &c2.forward(&x).unwrap(),
        &want.astype(Dtype::F64).unwrap(),
        0.0,
    );
    p.insert(
        "weight".into(),
        ops::zeros(&[6, 3, 2, 4], Dtype::F32).unwrap(),
    );
    assert!(c2.load_parameters(&p).is_err());
    let mut q = Params::new();
    q.insert("kernel".into(), ops::zeros(&[1], Dtype::F32).unwrap());
    assert!(c2.load_parameters(&q).is_err());

    // Without bias; 1-d; transposed.
    let c1 = conv::Conv1d::new(3, 5, 3, false, ConvOptions::default().dilation(2), &key).unwrap();
    assert_eq!(c1.parameters().len(), 1);
    assert_eq!(
        c1.forward(&ops::zeros(&[2, 9, 3], Dtype::F32).unwrap())
            .unwrap()
            .shape(),
        &[2, 5, 5]
    );
    let t = conv::ConvTranspose2d::new(
        4,
        6,
        3,
        true,
        ConvOptions::default()
            .stride(2)
            .padding(1)
            .output_padding(1),
        &key,
    )
    .unwrap();
    assert_eq!(t.weight.shape(), &[6, 3, 3, 4]);
    assert_eq!(
        t.forward(&ops::zeros(&[1, 4, 5, 4], Dtype::F32).unwrap())
            .unwrap()
            .shape(),
        &[1, 8, 10, 6]
    );
    let t1 = conv::ConvTranspose1d::from_weights(
        ops::ones(&[2, 3, 1], Dtype::F32).unwrap(),
        None,
        ConvOptions::default().stride(2),
    )
    .unwrap();
    assert_eq!(
        t1.forward(&ops::ones(&[1, 4, 1], Dtype::F32).unwrap())
            .unwrap()
            .shape(),
        &[1, 9, 2]
    );
    assert!(
        conv::Conv1d::from_weights(
            ops::ones(&[2, 3, 1], Dtype::F32).unwrap(),
            Some(ops::ones(&[3], Dtype::F32).unwrap()),
            ConvOptions::default()
        )
        .is_err()
    );

    // Pools: no parameters.
    let mp = pool::MaxPool2d::new(2);
    assert!(mp.parameters().is_empty());
    assert!(mp.clone().load_parameters(&q).is_err());
    let z = mp.forward(&x).unwrap();
    assert_eq!(z.shape(), &[2, 3, 2, 4]);
    let ap = pool::AvgPool1d::new(3)
        .stride(1)
        .padding(1)
        .count_include_pad(false);
    let o = ap
        .forward(&Array::from_slice(&[3.0f32, 6.0, 9.0], &[1, 3, 1]).unwrap())
        .unwrap();
    assert_eq!(o.to_vec::<f32>().unwrap(), vec![4.5, 6.0, 7.5]);
}

#[test]
fn training_a_conv_net_reduces_the_loss() {
    let key = random::key(3);
    let keys = random::split(&key, 2).unwrap();
    let k = |i: usize| ops::reshape(&ops::slice_axis(&keys, 0, i, i + 1).unwrap(), &[2]).unwrap();
    let c = conv::Conv2d::new(2, 3, 3, true, ConvOptions::default().padding(1), &k(0)).unwrap();
    let x = rand(&[4, 6, 6, 2], 11).astype(Dtype::F32).unwrap();
    let target = rand(&[4, 3, 3, 3], 12).astype(Dtype::F32).unwrap();
    let loss_of = |m: &conv::Conv2d| -> Result<Array> {
        let y = pool::max_pool2d(&m.forward(&x)?, 2, 2, 0)?;
        ops::mean(
            &ops::square(&ops::subtract(&y, &target)?)?,
            Axes::All,
            false,
        )
    };
    let mut model = c;
    let first = loss_of(&model).unwrap().item::<f32>().unwrap();
    for _ in 0..20 {
        let (_, g) = tessera_nn::value_and_grad(&model, loss_of).unwrap();
        let mut p = model.parameters();
        for (name, v) in p.iter_mut() {
            *v = ops::subtract(v, &ops::multiply(&g[name], &Array::scalar(0.1f32)).unwrap())
                .unwrap();
        }
        model.load_parameters(&p).unwrap();
    }
    let last = loss_of(&model).unwrap().item::<f32>().unwrap();
    assert!(last < 0.8 * first, "loss {first} -> {last}");
}

#[test]
fn errors_name_the_op_and_shapes() {
    let f = |d: &[usize]| ops::zeros(d, Dtype::F32).unwrap();
    let msg = |r: Result<Array>| match r {
        Err(e) => e.to_string(),
        Ok(a) => panic!("expected an error, got shape {:?}", a.shape()),
    };
    let m = msg(conv::conv2d(
        &f(&[1, 5, 5, 3]),
        &f(&[4, 3, 3, 2]),
        1,
        0,
        1,
        1,
    ));
    assert!(
        m.starts_with("[conv2d]") && m.contains("(1, 5, 5, 3)") && m.contains("(4, 3, 3, 2)"),
        "{m}"
    );
    let m = msg(conv::conv1d(&f(&[5, 3]), &f(&[4, 3, 3]), 1, 0, 1, 1));
    assert!(m.starts_with("[conv1d]") && m.contains("(N, L, C)"), "{m}");
    let m = msg(conv::conv1d(&f(&[1, 2, 3]), &f(&[4, 3, 3]), 1, 0, 1, 1));
    assert!(
        m.starts_with("[conv1d]") && m.contains("kernel spans 3"),
        "{m}"
    );
    assert!(conv::conv1d(&f(&[1, 5, 3]), &f(&[4, 3, 3]), 0, 0, 1, 1).is_err());
    assert!(conv::conv1d(&f(&[1, 5, 3]), &f(&[4, 3, 3]), 1, 0, 0, 1).is_err());
    assert!(conv::conv1d(&f(&[1, 5, 4]), &f(&[3, 3, 2]), 1, 0, 1, 2).is_err());
    assert!(conv::conv1d(&f(&[1, 5, 4]), &f(&[4, 3, 2]), 1, 0, 1, 0).is_err());
    let m = msg(conv::conv_transpose1d(
        &f(&[1, 5, 3]),
        &f(&[4, 3, 3]),
        2,
        0,
        1,
        2,
        1,
    ));
    assert!(
        m.starts_with("[conv_transpose1d]") && m.contains("output_padding"),
        "{m}"
    );
    let m = msg(conv::conv_transpose2d(
        &f(&[1, 1, 1, 3]),
        &f(&[4, 1, 1, 3]),
        1,
        1,
        1,
        0,
        1,
    ));
    assert!(
        m.starts_with("[conv_transpose2d]") && m.contains("output size"),
        "{m}"
    );
    let m = msg(pool::max_pool2d(&f(&[1, 5, 5, 3]), 2, 2, 2));
    assert!(m.starts_with("[max_pool2d]") && m.contains("half"), "{m}");
    let m = msg(pool::avg_pool1d(&f(&[1, 2, 3]), 3, 1, 0, true));
    assert!(
        m.starts_with("[avg_pool1d]") && m.contains("(1, 2, 3)"),
        "{m}"
    );
    assert!(pool::max_pool1d(&f(&[1, 5, 3]), 0, 1, 0).is_err());
    assert!(pool::max_pool1d(&f(&[1, 5, 3]), 2, 0, 0).is_err());
    assert!(pool::avg_pool2d(&f(&[5, 5, 3]), 2, 2, 0, true).is_err());
    assert!(conv::conv2d(&f(&[1, 5, 5, 3]), &f(&[4, 0, 3, 3]), 1, 0, 1, 1).is_err());
    // An empty batch is not an error.
    let e = conv::conv2d(&f(&[0, 5, 5, 3]), &f(&[4, 3, 3, 3]), 1, 1, 1, 1).unwrap();
    assert_eq!(e.shape(), &[0, 5, 5, 4]);
    assert_eq!(e.to_vec::<f32>().unwrap().len(), 0);
    let e = pool::max_pool1d(&f(&[0, 4, 3]), 2, 2, 0).unwrap();
    assert_eq!(e.to_vec::<f32>().unwrap().len(), 0);
}

#[test]
fn compile_and_vmap_of_a_convolution() {
    let x = rand(&[3, 2, 7, 4], 21).astype(Dtype::F32).unwrap();
    let w = rand(&[6, 3, 2], 22).astype(Dtype::F32).unwrap();
    let eager = |a: &[Array]| -> Result<Vec<Array>> {
        let y = conv::conv1d(&a[0], &a[1], 2, 1, 1, 2)?;
        Ok(vec![pool::max_pool1d(
            &tessera_nn::activations::relu(&y)?,
            2,
            1,
            1,
        )?])
    };
    // vmap over a leading axis equals the convolution of the merged batch.
    let v = transforms::vmap(eager, &[x.clone(), w.clone()], &[Some(0), None], &[0]).unwrap();
    let merged = eager(&[ops::reshape(&x, &[6, 7, 4]).unwrap(), w.clone()]).unwrap();
    let want = ops::reshape(&merged[0], v[0].shape()).unwrap();
    close("vmap", &v[0], &want.astype(Dtype::F64).unwrap(), 1e-6);
    // compile gives the eager values.
    let xm = ops::reshape(&x, &[6, 7, 4]).unwrap();
    let compiled = transforms::compile(eager);
    let c = compiled.call(&[xm.clone(), w.clone()]).unwrap();
    close(
        "compile",
        &c[0],
        &eager(&[xm, w]).unwrap()[0].astype(Dtype::F64).unwrap(),
        1e-6,
    );
}
