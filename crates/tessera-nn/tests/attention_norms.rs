//! GroupNorm, BatchNorm, MultiHeadAttention and the transformer layers against PyTorch
//! (tests/fixtures/nn/attention_norms.json, written by scripts/gen-nn-attn-fixtures.py in
//! float64): the PyTorch state_dict is loaded through `load_parameters` unchanged, and the
//! forward output and the gradients of sum(out * r) with respect to every input and parameter
//! are compared in float64 (relative 1e-9; the fixture keeps 10 digits) and float32 (2e-4).
//! BatchNorm also checks its updated running statistics. ALiBi and RoPE against MLX (same
//! fixture) and their formulas; Sequential names and forward; errors; compile, vmap, dropout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{close, data_of, fixture, tensor};
use serde_json::Value;
use tessera_core::transforms::{self, Params};
use tessera_core::{Array, Dtype, Result, ops, random};
use tessera_nn::Module;
use tessera_nn::attention::{
    ALiBi, AttentionOptions, MultiHeadAttention, RoPE, alibi_bias, alibi_bias_offset, alibi_slopes,
};
use tessera_nn::containers::Sequential;
use tessera_nn::layers::Linear;
use tessera_nn::norms::{BatchNorm, GroupNorm};
use tessera_nn::transformer::{
    Activation, DecoderOptions, EncoderOptions, TransformerConfig, TransformerDecoderLayer,
    TransformerEncoderLayer,
};

fn key(seed: u64) -> Array {
    random::key(seed)
}

fn cfg_usize(c: &Value, k: &str) -> usize {
    c["config"][k].as_u64().unwrap() as usize
}

/// A layer under test: builds its output from named inputs.
#[derive(Clone)]
enum Layer {
    Group(GroupNorm),
    Batch(BatchNorm),
    Mha(MultiHeadAttention),
    Enc(TransformerEncoderLayer),
    Dec(TransformerDecoderLayer),
}

impl Layer {
    fn as_module_params(&self) -> Params {
        match self {
            Layer::Group(m) => m.parameters(),
            Layer::Batch(m) => m.parameters(),
            Layer::Mha(m) => m.parameters(),
            Layer::Enc(m) => m.parameters(),
            Layer::Dec(m) => m.parameters(),
        }
    }

    fn load(&mut self, p: &Params) -> Result<()> {
        match self {
            Layer::Group(m) => m.load_parameters(p),
            Layer::Batch(m) => m.load_parameters(p),
            Layer::Mha(m) => m.load_parameters(p),
            Layer::Enc(m) => m.load_parameters(p),
            Layer::Dec(m) => m.load_parameters(p),
        }
    }
}

fn build(c: &Value) -> Layer {
    let kind = c["kind"].as_str().unwrap();
    let cfg = &c["config"];
    match kind {
        "groupnorm" => Layer::Group(
            GroupNorm::new(
                cfg_usize(c, "groups"),
                cfg_usize(c, "channels"),
                cfg["eps"].as_f64().unwrap(),
                cfg["affine"].as_bool().unwrap(),
            )
            .unwrap(),
        ),
        "batchnorm" => {
            let mut m = BatchNorm::new(
                cfg_usize(c, "dims"),
                cfg_usize(c, "features"),
                cfg["eps"].as_f64().unwrap(),
                cfg["momentum"].as_f64(),
                cfg["affine"].as_bool().unwrap(),
                cfg["track_running_stats"].as_bool().unwrap(),
            )
            .unwrap();
            m.training = cfg["training"].as_bool().unwrap();
            Layer::Batch(m)
        }
        "mha" => Layer::Mha(
            MultiHeadAttention::with_dims(
                cfg_usize(c, "embed_dim"),
                cfg_usize(c, "num_heads"),
                cfg_usize(c, "kdim"),
                cfg_usize(c, "vdim"),
                0.0,
                cfg["bias"].as_bool().unwrap(),
                &key(1),
            )
            .unwrap(),
        ),
        "encoder" | "decoder" => {
            let mut t = TransformerConfig::new(cfg_usize(c, "d_model"), cfg_usize(c, "nhead"));
            t.dim_feedforward = cfg_usize(c, "dim_feedforward");
            t.dropout = 0.0;
            t.activation = match cfg["activation"].as_str().unwrap() {
                "relu" => Activation::Relu,
                _ => Activation::Gelu,
            };
            t.norm_first = cfg["norm_first"].as_bool().unwrap();
            t.layer_norm_eps = cfg["layer_norm_eps"].as_f64().unwrap();
            if kind == "encoder" {
                Layer::Enc(TransformerEncoderLayer::new(t, &key(2)).unwrap())
            } else {
                Layer::Dec(TransformerDecoderLayer::new(t, &key(3)).unwrap())
            }
        }
        other => panic!("no driver for {other}"),
    }
}

/// The layer's output for the case's inputs (`inp`) and masks in `dt`.
fn run(c: &Value, layer: &Layer, inp: &Params, dt: Dtype) -> Result<Array> {
    let mask = |k: &str| c["masks"].get(k).map(|v| tensor(v, dt));
    let causal = c["causal"].as_bool() == Some(true);
    match layer {
        Layer::Group(m) => m.forward(&inp["x"]),
        Layer::Batch(m) => m.forward(&inp["x"]),
        Layer::Mha(m) => {
            let (kpm, am) = (mask("key_padding_mask"), mask("attn_mask"));
            let o = AttentionOptions {
                key_padding_mask: kpm.as_ref(),
                attn_mask: am.as_ref(),
                causal,
                dropout_key: None,
            };
            let q = &inp["query"];
            let k = inp.get("key").unwrap_or(q);
            let v = inp.get("value").unwrap_or(q);
            m.forward_with(q, k, v, &o)
        }
        Layer::Enc(m) => {
            let kpm = mask("src_key_padding_mask");
            let o = EncoderOptions {
                src_key_padding_mask: kpm.as_ref(),
                causal,
                ..Default::default()
            };
            m.forward_with(&inp["src"], &o)
        }
        Layer::Dec(m) => {
            let kpm = mask("memory_key_padding_mask");
            let o = DecoderOptions {
                memory_key_padding_mask: kpm.as_ref(),
                tgt_causal: causal,
                ..Default::default()
            };
            m.forward_with(&inp["tgt"], &inp["memory"], &o)
        }
    }
}

fn params_of(v: &Value, dt: Dtype) -> Params {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, t)| {
                    let a = if k == "num_batches_tracked" {
                        Array::scalar(data_of(t)[0] as i64)
                    } else {
                        tensor(t, dt)
                    };
                    (k.clone(), a)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check_case(c: &Value, dt: Dtype, tol: f64) {
    let name = c["name"].as_str().unwrap();
    let mut layer = build(c);
    let params = params_of(&c["params"], dt);
    // The module's own parameter names are exactly PyTorch's.
    let ours: Vec<String> = layer.as_module_params().keys().cloned().collect();
    let theirs: Vec<String> = params.keys().cloned().collect();
    assert_eq!(ours, theirs, "{name}: parameter names");
    layer.load(&params).unwrap();
    if let Some(b) = c.get("buffers_before") {
        layer.load(&params_of(b, dt)).unwrap();
    }
    let inputs = params_of(&c["inputs"], dt);
    let out = run(c, &layer, &inputs, dt).unwrap();
    assert_eq!(out.dtype(), dt, "{name}: dtype");
    close(
        &format!("{name} {dt} out"),
        &out,
        &tensor(&c["out"], Dtype::F64),
        tol,
    );

    // Gradients with respect to inputs and parameters in one map ("in:" marks inputs).
    let mut all = params.clone();
    for (k, v) in &inputs {
        all.insert(format!("in:{k}"), v.clone());
    }
    let r = tensor(&c["r"], dt);
    let (_, grads) = transforms::value_and_grad_params(
        |p| {
            let mut l = layer.clone();
            let (mut inp, mut par) = (Params::new(), Params::new());
            for (k, v) in p {
                match k.strip_prefix("in:") {
                    Some(k) => inp.insert(k.to_string(), v.clone()),
                    None => par.insert(k.clone(), v.clone()),
                };
            }
            l.load(&par)?;
            let y = run(c, &l, &inp, dt)?;
            ops::sum(&ops::multiply(&y, &r)?, ops::Axes::All, false)
        },
        &all,
    )
    .unwrap();
    let want = c["grads"].as_object().unwrap();
    assert_eq!(want.len(), grads.len(), "{name}: gradient count");
    for (k, w) in want {
        let g = grads
            .get(k)
            .or_else(|| grads.get(&format!("in:{k}")))
            .unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
        close(
            &format!("{name} {dt} grad {k}"),
            g,
            &tensor(w, Dtype::F64),
            tol,
        );
    }

    // BatchNorm: the updated buffers.
    if let (Layer::Batch(m), Some(after)) = (&layer, c.get("buffers_after")) {
        let (_, b) = m.forward_with_buffers(&inputs["x"]).unwrap();
        if !m.training {
            assert!(b.is_none(), "{name}: evaluation leaves the buffers");
            let sd = m.state_dict();
            let want = params_of(after, Dtype::F64);
            close(
                &format!("{name} eval buffers"),
                &sd["running_var"],
                &want["running_var"],
                tol,
            );
            return;
        }
        let b = b.expect("training with tracking returns buffers");
        let want = params_of(after, Dtype::F64);
        close(
            &format!("{name} running_mean"),
            &b.running_mean,
            &want["running_mean"],
            tol,
        );
        close(
            &format!("{name} running_var"),
            &b.running_var,
            &want["running_var"],
            tol,
        );
        assert_eq!(
            b.num_batches_tracked.item::<i64>().unwrap(),
            want["num_batches_tracked"].item::<i64>().unwrap()
        );
        // forward_update installs them; state_dict has PyTorch's names.
        let mut m2 = m.clone();
        m2.forward_update(&inputs["x"]).unwrap();
        let sd = m2.state_dict();
        close("installed", &sd["running_var"], &want["running_var"], tol);
        assert!(sd.contains_key("num_batches_tracked"));
    }
}

#[test]
fn torch_golden_f64() {
    let f = fixture("attention_norms.json");
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        check_case(c, Dtype::F64, 1e-9);
    }
}

#[test]
fn torch_golden_f32() {
    let f = fixture("attention_norms.json");
    for c in f["cases"].as_array().unwrap() {
        check_case(c, Dtype::F32, 2e-4);
    }
}

#[test]
fn alibi_against_mlx_and_formula() {
    let f = fixture("attention_norms.json");
    let cases = f["mlx"]["alibi"].as_array().unwrap();
    assert!(!cases.is_empty(), "the fixture has MLX references");
    for c in cases {
        let u = |k: &str| c[k].as_u64().unwrap() as usize;
        let b = alibi_bias_offset(u("heads"), u("q_len"), u("k_len"), u("offset")).unwrap();
        close("alibi", &b, &tensor(&c["bias"], Dtype::F64), 1e-7);
    }
    // Powers of two: 2^(-8(i+1)/n); the formula -slope * |i - j|.
    let s = alibi_slopes(8);
    for (i, v) in s.iter().enumerate() {
        assert!((v - 2f64.powi(-(i as i32 + 1))).abs() < 1e-15);
    }
    assert_eq!(alibi_slopes(6).len(), 6);
    let b = alibi_bias(4, 3, 5).unwrap();
    assert_eq!(b.shape(), [1, 4, 3, 5]);
    let v = b.to_vec::<f32>().unwrap();
    let s = alibi_slopes(4);
    for h in 0..4 {
        for i in 0..3 {
            for j in 0..5 {
                let want = -(s[h] * (i as f64 - j as f64).abs());
                assert!((v[(h * 3 + i) * 5 + j] as f64 - want).abs() < 1e-6);
            }
        }
    }
    // The layer adds it to scores (N, H, L, S).
    let scores = random::normal(&[2, 4, 3, 5], Dtype::F32, 0.0, 1.0, Some(&key(5))).unwrap();
    let y = ALiBi.forward(&scores).unwrap();
    close("alibi layer", &y, &ops::add(&scores, &b).unwrap(), 1e-6);
    assert!(
        ALiBi
            .forward(&ops::zeros(&[3, 4], Dtype::F32).unwrap())
            .is_err()
    );
    assert!(alibi_bias(0, 2, 2).is_err());
}

/// The rotation by the formula, in f64: x (..., L, D).
fn rope_reference(x: &[f64], shape: &[usize], r: &RoPE, offset: usize) -> Vec<f64> {
    let (l, d) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let half = r.dims / 2;
    let mut y = x.to_vec();
    for row in 0..x.len() / d {
        let p = (row % l + offset) as f64;
        for i in 0..half {
            let th = p * r.scale * r.base.powf(-2.0 * i as f64 / r.dims as f64);
            let (a, b) = if r.traditional {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + half)
            };
            let (xa, xb) = (x[row * d + a], x[row * d + b]);
            y[row * d + a] = xa * th.cos() - xb * th.sin();
            y[row * d + b] = xb * th.cos() + xa * th.sin();
        }
    }
    y
}

#[test]
fn rope_against_mlx_formula_and_op() {
    let f = fixture("attention_norms.json");
    let x32 = tensor(&f["mlx"]["rope_x"], Dtype::F32);
    let x64 = x32.astype(Dtype::F64).unwrap();
    let cases = f["mlx"]["rope"].as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let r = RoPE::new(
            c["dims"].as_u64().unwrap() as usize,
            c["traditional"].as_bool().unwrap(),
            c["base"].as_f64().unwrap(),
            c["scale"].as_f64().unwrap(),
        )
        .unwrap();
        let off = c["offset"].as_u64().unwrap() as usize;
        // MLX (f32).
        let y = r.forward_offset(&x32, off).unwrap();
        close("rope vs mlx", &y, &tensor(&c["out"], Dtype::F64), 1e-5);
        // The formula (f64, tight).
        let y64 = r.forward_offset(&x64, off).unwrap();
        let want = rope_reference(&x64.to_vec::<f64>().unwrap(), x64.shape(), &r, off);
        let want = Array::from_slice(&want, x64.shape()).unwrap();
        close("rope vs formula", &y64, &want, 1e-12);
        // ops::rope directly with the layer's tables, heads axis explicit.
        let l = x32.shape()[2];
        let (cs, sn) = r.tables(l, off, Dtype::F32).unwrap();
        let xh = ops::reshape(&x32, &[2, 2, 3, 1, 8]).unwrap();
        let direct = ops::rope(&xh, &cs, &sn, r.traditional).unwrap();
        close(
            "rope vs ops::rope",
            &y,
            &ops::reshape(&direct, x32.shape()).unwrap(),
            0.0,
        );
    }
    assert!(RoPE::new(3, false, 10000.0, 1.0).is_err());
    let r = RoPE::new(16, false, 10000.0, 1.0).unwrap();
    let e = r.forward(&x32).unwrap_err().to_string();
    assert!(e.contains("RoPE") && e.contains("(2, 2, 3, 8)"), "{e}");
}

#[test]
fn sequential_names_forward_and_state() {
    let l0 = Linear::new(3, 4, true, &key(10)).unwrap();
    let l2 = Linear::new(4, 2, false, &key(11)).unwrap();
    let seq = Sequential::new()
        .push(l0.clone())
        .push_fn("ReLU", |x| ops::maximum(x, &Array::scalar(0.0f32)))
        .push(l2.clone());
    let names: Vec<String> = seq.parameters().keys().cloned().collect();
    assert_eq!(names, ["0.bias", "0.weight", "2.weight"]);
    let x = random::normal(&[5, 3], Dtype::F32, 0.0, 1.0, Some(&key(12))).unwrap();
    let want = l2
        .forward(&ops::maximum(&l0.forward(&x).unwrap(), &Array::scalar(0.0f32)).unwrap())
        .unwrap();
    close("sequential", &seq.forward(&x).unwrap(), &want, 0.0);

    // Loading by name, and the error for a bad name.
    let mut s2 = seq.clone();
    let mut p = Params::new();
    p.insert("2.weight".into(), ops::zeros(&[2, 4], Dtype::F32).unwrap());
    s2.load_parameters(&p).unwrap();
    close(
        "loaded",
        &s2.forward(&x).unwrap(),
        &ops::zeros(&[5, 2], Dtype::F32).unwrap(),
        0.0,
    );
    // The clone is independent.
    close("clone", &seq.forward(&x).unwrap(), &want, 0.0);
    for bad in ["1.weight", "7.weight", "x.weight", "weight"] {
        let mut p = Params::new();
        p.insert(bad.into(), ops::zeros(&[2], Dtype::F32).unwrap());
        let e = s2.clone().load_parameters(&p).unwrap_err().to_string();
        assert!(e.contains(bad), "{e}");
    }

    // BatchNorm inside: buffers under "<i>.running_mean", updated by forward_update in training,
    // used in evaluation; nested sequences name "1.0.weight".
    let mut s3 = Sequential::new()
        .push(Linear::new(3, 4, true, &key(13)).unwrap())
        .push_layer(BatchNorm::new_1d(4).unwrap())
        .push_layer(Sequential::new().push(Linear::new(4, 2, true, &key(14)).unwrap()));
    let sd = s3.state_dict();
    for k in [
        "0.weight",
        "1.weight",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "2.0.weight",
        "2.0.bias",
    ] {
        assert!(sd.contains_key(k), "{k} in {:?}", sd.keys());
    }
    assert!(!s3.parameters().contains_key("1.running_mean"));
    let y_train = s3.forward(&x).unwrap();
    let y_upd = s3.forward_update(&x).unwrap();
    close("train forward", &y_upd, &y_train, 0.0);
    let nbt = s3.buffers()["1.num_batches_tracked"].item::<i64>().unwrap();
    assert_eq!(nbt, 1);
    // The running mean moved 10% of the way to the batch mean of layer 0's output.
    let h = s3.layers[0].layer_forward(&x).unwrap();
    let bm = ops::mean(&h, 0, false).unwrap();
    close(
        "running_mean",
        &s3.buffers()["1.running_mean"],
        &ops::multiply(&bm, &Array::scalar(0.1f32)).unwrap(),
        1e-6,
    );
    s3.set_training(false);
    let y_eval = s3.forward(&x).unwrap();
    assert!(
        !ops::allclose(&y_eval, &y_train, 1e-5, 1e-5, false)
            .unwrap()
            .item::<bool>()
            .unwrap()
    );
    // A whole state_dict loads back.
    let mut s4 = s3.clone();
    s4.load_parameters(&s3.state_dict()).unwrap();
    close("reloaded", &s4.forward(&x).unwrap(), &y_eval, 0.0);
}

#[test]
fn errors_name_the_layer_and_shapes() {
    let msg = |r: Result<Array>| r.unwrap_err().to_string();
    assert!(GroupNorm::new(4, 6, 1e-5, true).is_err());
    let g = GroupNorm::new(2, 6, 1e-5, true).unwrap();
    let e = msg(g.forward(&ops::zeros(&[2, 3, 4], Dtype::F32).unwrap()));
    assert!(e.contains("GroupNorm") && e.contains("(2, 3, 4)"), "{e}");
    let b = BatchNorm::new_2d(3).unwrap();
    let e = msg(b.forward(&ops::zeros(&[2, 3, 3], Dtype::F32).unwrap()));
    assert!(e.contains("BatchNorm2d") && e.contains("(2, 3, 3)"), "{e}");
    let b1 = BatchNorm::new_1d(3).unwrap();
    let e = msg(b1.forward(&ops::zeros(&[1, 3], Dtype::F32).unwrap()));
    assert!(e.contains("more than 1 value"), "{e}");

    let m = MultiHeadAttention::new(4, 2, 0.0, true, &key(20)).unwrap();
    assert!(MultiHeadAttention::new(5, 2, 0.0, true, &key(20)).is_err());
    let q = ops::zeros(&[2, 3, 4], Dtype::F32).unwrap();
    let e = msg(m.forward(&ops::zeros(&[2, 3, 5], Dtype::F32).unwrap()));
    assert!(
        e.contains("MultiheadAttention") && e.contains("(2, 3, 5)"),
        "{e}"
    );
    let bad = ops::zeros(&[3, 2], Dtype::F32).unwrap();
    let o = AttentionOptions {
        attn_mask: Some(&bad),
        ..Default::default()
    };
    let e = msg(m.forward_with(&q, &q, &q, &o));
    assert!(e.contains("attn_mask") && e.contains("(3, 2)"), "{e}");
    let o = AttentionOptions {
        key_padding_mask: Some(&bad),
        ..Default::default()
    };
    let e = msg(m.forward_with(&q, &q, &q, &o));
    assert!(e.contains("key_padding_mask"), "{e}");
    let mut m2 = m.clone();
    let mut p = Params::new();
    p.insert(
        "q_proj_weight".into(),
        ops::zeros(&[4, 4], Dtype::F32).unwrap(),
    );
    assert!(m2.load_parameters(&p).is_err());

    let dec = TransformerDecoderLayer::new(TransformerConfig::new(4, 2), &key(21)).unwrap();
    let e = msg(dec.forward(&q));
    assert!(
        e.contains("TransformerDecoderLayer") && e.contains("memory"),
        "{e}"
    );
    let enc = TransformerEncoderLayer::new(TransformerConfig::new(4, 2), &key(22)).unwrap();
    let e = msg(enc.forward(&ops::zeros(&[2, 3, 6], Dtype::F32).unwrap()));
    assert!(
        e.contains("TransformerEncoderLayer") && e.contains("(2, 3, 6)"),
        "{e}"
    );
}

#[test]
fn dropout_only_with_a_key() {
    let m = MultiHeadAttention::new(4, 2, 0.5, true, &key(30)).unwrap();
    let x = random::normal(&[2, 3, 4], Dtype::F32, 0.0, 1.0, Some(&key(31))).unwrap();
    let plain = m.forward(&x).unwrap();
    let o = AttentionOptions::default();
    close(
        "no key",
        &m.forward_with(&x, &x, &x, &o).unwrap(),
        &plain,
        1e-6,
    );
    let k = key(32);
    let o = AttentionOptions {
        dropout_key: Some(&k),
        ..Default::default()
    };
    let a = m.forward_with(&x, &x, &x, &o).unwrap();
    let b = m.forward_with(&x, &x, &x, &o).unwrap();
    close("same key", &a, &b, 0.0);
    assert!(
        !ops::allclose(&a, &plain, 1e-4, 1e-4, false)
            .unwrap()
            .item::<bool>()
            .unwrap()
    );
    let mut c = TransformerConfig::new(4, 2);
    c.dim_feedforward = 8;
    c.dropout = 0.3;
    let enc = TransformerEncoderLayer::new(c, &key(33)).unwrap();
    let eo = EncoderOptions {
        dropout_key: Some(&k),
        ..Default::default()
    };
    let y = enc.forward_with(&x, &eo).unwrap();
    assert_eq!(y.shape(), [2, 3, 4]);
    assert!(
        !ops::allclose(&y, &enc.forward(&x).unwrap(), 1e-4, 1e-4, false)
            .unwrap()
            .item::<bool>()
            .unwrap()
    );
}

#[test]
fn compile_vmap_and_sdpa_paths() {
    let mut c = TransformerConfig::new(4, 2);
    c.dim_feedforward = 8;
    c.norm_first = true;
    let enc = TransformerEncoderLayer::new(c, &key(40)).unwrap();
    let x = random::normal(&[2, 3, 4], Dtype::F32, 0.0, 1.0, Some(&key(41))).unwrap();
    let eager = enc.forward(&x).unwrap();
    let e2 = enc.clone();
    let compiled = transforms::compile(move |a: &[Array]| Ok(vec![e2.forward(&a[0])?]));
    close(
        "compile",
        &compiled.call(std::slice::from_ref(&x)).unwrap()[0],
        &eager,
        1e-5,
    );
    // vmap over a leading axis: each (N, L, E) slice through the layer.
    let xs = ops::stack(&[x.clone(), ops::negative(&x).unwrap()], 0).unwrap();
    let e3 = enc.clone();
    let v = transforms::vmap(
        move |a| Ok(vec![e3.forward(&a[0])?]),
        &[xs],
        &[Some(0)],
        &[0],
    )
    .unwrap();
    close(
        "vmap",
        &ops::slice_axis(&v[0], 0, 0, 1).unwrap(),
        &ops::expand_dims(&eager, &[0]).unwrap(),
        1e-5,
    );
    let g = GroupNorm::new(2, 4, 1e-5, true).unwrap();
    let gx = ops::reshape(&x, &[2, 3, 4]).unwrap();
    let gv = transforms::vmap(
        move |a| Ok(vec![g.forward(&ops::expand_dims(&a[0], &[0])?)?]),
        std::slice::from_ref(&gx),
        &[Some(0)],
        &[0],
    )
    .unwrap();
    let g2 = GroupNorm::new(2, 4, 1e-5, true).unwrap();
    close(
        "vmap groupnorm",
        &ops::reshape(&gv[0], &[2, 3, 4]).unwrap(),
        &g2.forward(&gx).unwrap(),
        1e-5,
    );
    // The fused sdpa path (a 2-D mask) equals the composite path (the same mask per batch).
    let m = MultiHeadAttention::new(4, 2, 0.0, true, &key(42)).unwrap();
    let mask = random::normal(&[3, 3], Dtype::F32, 0.0, 1.0, Some(&key(43))).unwrap();
    let o = AttentionOptions {
        attn_mask: Some(&mask),
        ..Default::default()
    };
    let fused = m.forward_with(&x, &x, &x, &o).unwrap();
    let m3 = ops::broadcast_to(&mask, &[4, 3, 3]).unwrap();
    let o = AttentionOptions {
        attn_mask: Some(&m3),
        ..Default::default()
    };
    close(
        "sdpa vs composite",
        &m.forward_with(&x, &x, &x, &o).unwrap(),
        &fused,
        1e-5,
    );
    // Unbatched input.
    let x0 = ops::squeeze(&ops::slice_axis(&x, 0, 0, 1).unwrap(), 0).unwrap();
    close(
        "unbatched",
        &m.forward(&x0).unwrap(),
        &ops::squeeze(
            &ops::slice_axis(&m.forward(&x).unwrap(), 0, 0, 1).unwrap(),
            0,
        )
        .unwrap(),
        1e-6,
    );
}
