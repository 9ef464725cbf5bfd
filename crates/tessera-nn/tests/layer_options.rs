//! Layer options against PyTorch (tests/fixtures/nn/layer_options.json at the repository root, written by
//! scripts/gen-nn-layers2-fixtures.py in float64): MultiheadAttention's `add_bias_kv`,
//! `add_zero_attn` and returned attention weights; pooling's `ceil_mode`, `dilation`,
//! `count_include_pad` and `divisor_override` (channels last); the TransformerEncoder /
//! TransformerDecoder stacks and the full Transformer with masks. Each PyTorch state_dict loads through
//! `load_parameters` unchanged (the names must be the same set), then the outputs and the
//! gradients of sum(out * r) (+ sum(weights * r_w)) with respect to every input and parameter
//! are compared in float64 (relative 1e-9; the fixture keeps 10 digits) and float32 (2e-4).
//! Plus the errors for invalid option combinations, and the Dropout layer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{close, fixture, params_of, tensor};
use serde_json::Value;
use tessera_core::transforms::{self, Params};
use tessera_core::{Array, Dtype, Result, ops, random};
use tessera_nn::Module;
use tessera_nn::attention::{AttentionConfig, AttentionOptions, MultiHeadAttention};
use tessera_nn::containers::Sequential;
use tessera_nn::layers::{Dropout, LayerNorm, Linear, dropout};
use tessera_nn::pool::{AvgPool, AvgPool1d, AvgPool2d, MaxPool, MaxPool1d, MaxPool2d};
use tessera_nn::transformer::{
    Activation, DecoderOptions, EncoderOptions, Transformer, TransformerConfig, TransformerDecoder,
    TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer, TransformerOptions,
};

fn key(seed: u64) -> Array {
    random::key(seed)
}

fn cfg_usize(c: &Value, k: &str) -> usize {
    c["config"][k].as_u64().unwrap() as usize
}

fn cfg_bool(c: &Value, k: &str) -> bool {
    c["config"][k].as_bool().unwrap()
}

/// A layer under test.
#[derive(Clone)]
enum Layer {
    Mha(MultiHeadAttention),
    Max1(MaxPool1d),
    Max2(MaxPool2d),
    Avg1(AvgPool1d),
    Avg2(AvgPool2d),
    EncStack(TransformerEncoder),
    DecStack(TransformerDecoder),
    Full(Box<Transformer>),
}

impl Layer {
    fn params(&self) -> Params {
        match self {
            Layer::Mha(m) => m.parameters(),
            Layer::Max1(m) => m.parameters(),
            Layer::Max2(m) => m.parameters(),
            Layer::Avg1(m) => m.parameters(),
            Layer::Avg2(m) => m.parameters(),
            Layer::EncStack(m) => m.parameters(),
            Layer::DecStack(m) => m.parameters(),
            Layer::Full(m) => m.parameters(),
        }
    }

    fn load(&mut self, p: &Params) -> Result<()> {
        match self {
            Layer::Mha(m) => m.load_parameters(p),
            Layer::Max1(m) => m.load_parameters(p),
            Layer::Max2(m) => m.load_parameters(p),
            Layer::Avg1(m) => m.load_parameters(p),
            Layer::Avg2(m) => m.load_parameters(p),
            Layer::EncStack(m) => m.load_parameters(p),
            Layer::DecStack(m) => m.load_parameters(p),
            Layer::Full(m) => m.load_parameters(p),
        }
    }
}

/// A fixture argument: a number (same for every dim) or a list.
fn dims<const D: usize>(v: &Value) -> [usize; D] {
    match v.as_array() {
        Some(a) => std::array::from_fn(|i| a[i].as_u64().unwrap() as usize),
        None => [v.as_u64().unwrap() as usize; D],
    }
}

fn max_pool<const D: usize>(a: &Value) -> MaxPool<D> {
    MaxPool::new(dims::<D>(&a["kernel"]))
        .stride(dims::<D>(&a["stride"]))
        .padding(dims::<D>(&a["padding"]))
        .dilation(dims::<D>(&a["dilation"]))
        .ceil_mode(a["ceil_mode"].as_bool().unwrap())
}

fn avg_pool<const D: usize>(a: &Value) -> AvgPool<D> {
    AvgPool::new(dims::<D>(&a["kernel"]))
        .stride(dims::<D>(&a["stride"]))
        .padding(dims::<D>(&a["padding"]))
        .ceil_mode(a["ceil_mode"].as_bool().unwrap())
        .count_include_pad(a["count_include_pad"].as_bool().unwrap())
        .divisor_override(a["divisor_override"].as_u64().map(|d| d as usize))
}

fn transformer_config(c: &Value) -> TransformerConfig {
    let mut t = TransformerConfig::new(cfg_usize(c, "d_model"), cfg_usize(c, "nhead"));
    t.dim_feedforward = cfg_usize(c, "dim_feedforward");
    t.dropout = 0.0;
    t.activation = match c["config"]["activation"].as_str().unwrap() {
        "relu" => Activation::Relu,
        _ => Activation::Gelu,
    };
    t.norm_first = cfg_bool(c, "norm_first");
    t.layer_norm_eps = c["config"]["layer_norm_eps"].as_f64().unwrap();
    t
}

fn build(c: &Value) -> Layer {
    let a = &c["config"];
    match c["kind"].as_str().unwrap() {
        "encoder_stack" => {
            let t = transformer_config(c);
            let l = TransformerEncoderLayer::new(t, &key(2)).unwrap();
            let norm = cfg_bool(c, "final_norm").then(|| LayerNorm::new(t.d_model, 1e-5, true));
            let norm = norm.transpose().unwrap();
            Layer::EncStack(TransformerEncoder::new(
                &l,
                cfg_usize(c, "num_layers"),
                norm,
            ))
        }
        "decoder_stack" => {
            let t = transformer_config(c);
            let l = TransformerDecoderLayer::new(t, &key(3)).unwrap();
            let norm = cfg_bool(c, "final_norm").then(|| LayerNorm::new(t.d_model, 1e-5, true));
            let norm = norm.transpose().unwrap();
            Layer::DecStack(TransformerDecoder::new(
                &l,
                cfg_usize(c, "num_layers"),
                norm,
            ))
        }
        "transformer" => Layer::Full(Box::new(
            Transformer::new(
                transformer_config(c),
                cfg_usize(c, "num_encoder_layers"),
                cfg_usize(c, "num_decoder_layers"),
                &key(4),
            )
            .unwrap(),
        )),
        "max_pool1d" => Layer::Max1(max_pool(a)),
        "max_pool2d" => Layer::Max2(max_pool(a)),
        "avg_pool1d" => Layer::Avg1(avg_pool(a)),
        "avg_pool2d" => Layer::Avg2(avg_pool(a)),
        "mha" => {
            let mut a = AttentionConfig::new(cfg_usize(c, "embed_dim"), cfg_usize(c, "num_heads"));
            a.kdim = cfg_usize(c, "kdim");
            a.vdim = cfg_usize(c, "vdim");
            a.bias = cfg_bool(c, "bias");
            a.add_bias_kv = cfg_bool(c, "add_bias_kv");
            a.add_zero_attn = cfg_bool(c, "add_zero_attn");
            Layer::Mha(MultiHeadAttention::from_config(a, &key(1)).unwrap())
        }
        other => panic!("no driver for {other}"),
    }
}

/// The output (and attention weights when the case returns them) for the inputs `inp`.
fn run(c: &Value, layer: &Layer, inp: &Params, dt: Dtype) -> Result<(Array, Option<Array>)> {
    let mask = |k: &str| c["masks"].get(k).map(|v| tensor(v, dt));
    let causal = c["causal"].as_bool() == Some(true);
    match layer {
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
            if cfg_bool(c, "need_weights") {
                let (y, w) =
                    m.forward_with_weights(q, k, v, &o, cfg_bool(c, "average_attn_weights"))?;
                Ok((y, Some(w)))
            } else {
                Ok((m.forward_with(q, k, v, &o)?, None))
            }
        }
        Layer::Max1(m) => Ok((m.forward(&inp["x"])?, None)),
        Layer::Max2(m) => Ok((m.forward(&inp["x"])?, None)),
        Layer::Avg1(m) => Ok((m.forward(&inp["x"])?, None)),
        Layer::Avg2(m) => Ok((m.forward(&inp["x"])?, None)),
        Layer::EncStack(m) => {
            let (am, kpm) = (mask("attn_mask"), mask("src_key_padding_mask"));
            let o = EncoderOptions {
                src_mask: am.as_ref(),
                src_key_padding_mask: kpm.as_ref(),
                causal,
                dropout_key: None,
            };
            Ok((m.forward_with(&inp["src"], &o)?, None))
        }
        Layer::DecStack(m) => {
            let (mm, tkpm, mkpm) = (
                mask("memory_mask"),
                mask("tgt_key_padding_mask"),
                mask("memory_key_padding_mask"),
            );
            let o = DecoderOptions {
                memory_mask: mm.as_ref(),
                tgt_key_padding_mask: tkpm.as_ref(),
                memory_key_padding_mask: mkpm.as_ref(),
                tgt_causal: causal,
                ..Default::default()
            };
            Ok((m.forward_with(&inp["tgt"], &inp["memory"], &o)?, None))
        }
        Layer::Full(m) => {
            let (sm, skpm, tkpm, mkpm) = (
                mask("src_mask"),
                mask("src_key_padding_mask"),
                mask("tgt_key_padding_mask"),
                mask("memory_key_padding_mask"),
            );
            let o = TransformerOptions {
                src_mask: sm.as_ref(),
                src_key_padding_mask: skpm.as_ref(),
                tgt_key_padding_mask: tkpm.as_ref(),
                memory_key_padding_mask: mkpm.as_ref(),
                tgt_causal: causal,
                ..Default::default()
            };
            Ok((m.forward_with(&inp["src"], &inp["tgt"], &o)?, None))
        }
    }
}

fn check_case(c: &Value, dt: Dtype, tol: f64) {
    let name = c["name"].as_str().unwrap();
    let mut layer = build(c);
    let params = params_of(&c["params"], dt);
    // The module's own parameter names are exactly PyTorch's.
    let ours: Vec<String> = layer.params().keys().cloned().collect();
    let theirs: Vec<String> = params.keys().cloned().collect();
    assert_eq!(ours, theirs, "{name}: parameter names");
    layer.load(&params).unwrap();
    let inputs = params_of(&c["inputs"], dt);
    let (out, w) = run(c, &layer, &inputs, dt).unwrap();
    assert_eq!(out.dtype(), dt, "{name}: dtype");
    close(
        &format!("{name} {dt} out"),
        &out,
        &tensor(&c["out"], Dtype::F64),
        tol,
    );
    assert_eq!(w.is_some(), c.get("weights").is_some(), "{name}: weights");
    if let Some(w) = &w {
        close(
            &format!("{name} {dt} weights"),
            w,
            &tensor(&c["weights"], Dtype::F64),
            tol,
        );
    }

    // Gradients with respect to inputs and parameters in one map ("in:" marks inputs).
    let mut all = params.clone();
    for (k, v) in &inputs {
        all.insert(format!("in:{k}"), v.clone());
    }
    let r = tensor(&c["r"], dt);
    let r_w = c.get("r_w").map(|v| tensor(v, dt));
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
            let (y, w) = run(c, &l, &inp, dt)?;
            let mut loss = ops::sum(&ops::multiply(&y, &r)?, ops::Axes::All, false)?;
            if let (Some(w), Some(r_w)) = (w, &r_w) {
                let lw = ops::sum(&ops::multiply(&w, r_w)?, ops::Axes::All, false)?;
                loss = ops::add(&loss, &lw)?;
            }
            Ok(loss)
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
}

fn cases_of(prefixes: &[&str]) -> Vec<Value> {
    let f = fixture("layer_options.json");
    let all = f["cases"].as_array().unwrap();
    let picked: Vec<Value> = all
        .iter()
        .filter(|c| {
            let k = c["kind"].as_str().unwrap();
            prefixes.iter().any(|p| k.starts_with(p))
        })
        .cloned()
        .collect();
    assert!(!picked.is_empty(), "no fixture cases for {prefixes:?}");
    picked
}

#[test]
fn mha_options_match_pytorch_f64() {
    let cases = cases_of(&["mha"]);
    assert!(cases.len() >= 9);
    for c in &cases {
        check_case(c, Dtype::F64, 1e-9);
    }
}

#[test]
fn mha_options_match_pytorch_f32() {
    for c in &cases_of(&["mha"]) {
        check_case(c, Dtype::F32, 2e-4);
    }
}

/// Unbatched inputs give the batched result's first entry, weights included; the sdpa path (no
/// weights) equals the composite path (weights asked for) with bias_k and zero attention.
#[test]
fn mha_weights_shapes_and_paths() {
    let mut c = AttentionConfig::new(4, 2);
    c.add_bias_kv = true;
    c.add_zero_attn = true;
    let m = MultiHeadAttention::from_config(c, &key(2)).unwrap();
    assert_eq!(m.bias_k.as_ref().unwrap().shape(), [1, 1, 4]);
    let q = random::normal(&[2, 3, 4], Dtype::F32, 0.0, 1.0, Some(&key(3))).unwrap();
    let kv = random::normal(&[2, 5, 4], Dtype::F32, 0.0, 1.0, Some(&key(4))).unwrap();
    let mask = random::normal(&[3, 5], Dtype::F32, 0.0, 1.0, Some(&key(5))).unwrap();
    let o = AttentionOptions {
        attn_mask: Some(&mask),
        ..Default::default()
    };
    let fused = m.forward_with(&q, &kv, &kv, &o).unwrap();
    let (y, w) = m.forward_with_weights(&q, &kv, &kv, &o, false).unwrap();
    close("sdpa vs composite", &y, &fused, 1e-5);
    assert_eq!(w.shape(), [2, 2, 3, 7]);
    // Rows of the weights sum to 1; the average is the mean over heads.
    let rows = ops::sum(&w, -1, false).unwrap();
    close(
        "rows",
        &rows,
        &ops::ones(&[2, 2, 3], Dtype::F32).unwrap(),
        1e-5,
    );
    let (_, wa) = m.forward_with_weights(&q, &kv, &kv, &o, true).unwrap();
    close("average", &wa, &ops::mean(&w, 1, false).unwrap(), 1e-6);
    // Unbatched.
    let first = |x: &Array| ops::squeeze(&ops::slice_axis(x, 0, 0, 1).unwrap(), 0).unwrap();
    let (y0, w0) = m
        .forward_with_weights(&first(&q), &first(&kv), &first(&kv), &o, true)
        .unwrap();
    close("unbatched out", &y0, &first(&y), 1e-6);
    close("unbatched weights", &w0, &first(&wa), 1e-6);
    assert_eq!(w0.shape(), [3, 7]);
    // A fully masked key row still attends to bias_k and the zero key: no NaN (PyTorch's
    // reason for these options).
    let all = ops::full(&[2, 5], 1.0, Dtype::Bool).unwrap();
    let o = AttentionOptions {
        key_padding_mask: Some(&all),
        ..Default::default()
    };
    let (y, w) = m.forward_with_weights(&q, &kv, &kv, &o, false).unwrap();
    let y = y.to_vec::<f32>().unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
    let wv = w.to_vec::<f32>().unwrap();
    for (i, v) in wv.iter().enumerate() {
        if i % 7 < 5 {
            assert_eq!(*v, 0.0, "masked key {i}");
        }
    }
}

#[test]
fn mha_option_errors() {
    let msg = |r: Result<Array>| r.unwrap_err().to_string();
    let q = ops::zeros(&[2, 3, 4], Dtype::F32).unwrap();
    // bias_k without bias_v.
    let mut c = AttentionConfig::new(4, 2);
    c.add_bias_kv = true;
    let mut m = MultiHeadAttention::from_config(c, &key(6)).unwrap();
    m.bias_v = None;
    let e = msg(m.forward(&q));
    assert!(e.contains("bias_k") && e.contains("bias_v"), "{e}");
    // A wrongly shaped bias_k set by hand.
    let mut m = MultiHeadAttention::from_config(c, &key(6)).unwrap();
    m.bias_k = Some(ops::zeros(&[1, 4], Dtype::F32).unwrap());
    let e = msg(m.forward(&q));
    assert!(e.contains("bias_k") && e.contains("(1, 4)"), "{e}");
    // Loading bias_k into a layer without add_bias_kv, or of the wrong shape.
    let mut plain = MultiHeadAttention::new(4, 2, 0.0, true, &key(7)).unwrap();
    let mut p = Params::new();
    p.insert("bias_k".into(), ops::zeros(&[1, 1, 4], Dtype::F32).unwrap());
    let e = plain.load_parameters(&p).unwrap_err().to_string();
    assert!(e.contains("bias_k") && e.contains("add_bias_kv"), "{e}");
    let mut with = MultiHeadAttention::from_config(c, &key(8)).unwrap();
    let mut p = Params::new();
    p.insert("bias_v".into(), ops::zeros(&[1, 4], Dtype::F32).unwrap());
    let e = with.load_parameters(&p).unwrap_err().to_string();
    assert!(e.contains("bias_v"), "{e}");
    // Masks keep the key's own length S, not S + the appended positions.
    c.add_zero_attn = true;
    let m = MultiHeadAttention::from_config(c, &key(9)).unwrap();
    let bad = ops::zeros(&[3, 5], Dtype::F32).unwrap();
    let o = AttentionOptions {
        attn_mask: Some(&bad),
        ..Default::default()
    };
    let e = msg(m.forward_with(&q, &q, &q, &o));
    assert!(e.contains("attn_mask must be (3, 3)"), "{e}");
    let e = m
        .forward_with_weights(&q, &q, &q, &o, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("attn_mask"), "{e}");
    // Invalid configurations.
    let mut bad = AttentionConfig::new(6, 4);
    assert!(MultiHeadAttention::from_config(bad, &key(10)).is_err());
    bad.num_heads = 2;
    bad.dropout = 1.0;
    let e = MultiHeadAttention::from_config(bad, &key(10))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("dropout"), "{e}");
}

#[test]
fn pool_options_match_pytorch_f64() {
    let cases = cases_of(&["max_pool", "avg_pool"]);
    assert!(cases.len() >= 14);
    for c in &cases {
        check_case(c, Dtype::F64, 1e-9);
    }
}

#[test]
fn pool_options_match_pytorch_f32() {
    for c in &cases_of(&["max_pool", "avg_pool"]) {
        check_case(c, Dtype::F32, 2e-5);
    }
}

/// PyTorch's output sizes, including the rule that drops a ceil_mode window starting past the
/// input and its left padding, and ceil_mode windows larger than the padded input.
#[test]
fn pool_output_sizes() {
    let x = |l: usize| ops::zeros(&[1, l, 1], Dtype::F32).unwrap();
    let len = |p: MaxPool1d, l: usize| p.forward(&x(l)).unwrap().shape()[1];
    // (size, kernel, stride, padding, dilation, ceil) -> PyTorch's size.
    for (size, k, s, p, d, ceil, want) in [
        (7, 2, 2, 0, 1, false, 3),
        (7, 2, 2, 0, 1, true, 4),
        (5, 2, 2, 1, 1, true, 3), // ceil gives 4, the 4th would start at 6 >= 5 + 1
        (6, 2, 2, 1, 1, true, 4),
        (10, 3, 3, 1, 2, true, 4),
        (10, 3, 3, 1, 2, false, 3),
        (9, 3, 1, 1, 2, false, 7),
        (3, 4, 2, 0, 1, true, 1), // a window larger than the input, only with ceil_mode
        (8, 3, 3, 0, 1, true, 3),
        (8, 3, 3, 0, 1, false, 2),
    ] {
        let m = MaxPool1d::new(k)
            .stride(s)
            .padding(p)
            .dilation(d)
            .ceil_mode(ceil);
        assert_eq!(len(m, size), want, "{size} {k} {s} {p} {d} {ceil}");
        let a = AvgPool1d::new(k).stride(s).padding(p).ceil_mode(ceil);
        if d == 1 {
            assert_eq!(a.forward(&x(size)).unwrap().shape()[1], want);
        }
    }
    // The window past a 3-element input, with ceil_mode: max of the 3, mean over the 3.
    let v = Array::from_slice(&[1.0f32, 5.0, 3.0], &[1, 3, 1]).unwrap();
    let m = MaxPool1d::new(4).stride(2).ceil_mode(true);
    assert_eq!(m.forward(&v).unwrap().to_vec::<f32>().unwrap(), vec![5.0]);
    let a = AvgPool1d::new(4).stride(2).ceil_mode(true);
    assert_eq!(a.forward(&v).unwrap().to_vec::<f32>().unwrap(), vec![3.0]);
}

#[test]
fn pool_option_errors() {
    let x = ops::zeros(&[1, 5, 5, 2], Dtype::F32).unwrap();
    let msg = |r: Result<Array>| r.unwrap_err().to_string();
    let e = msg(MaxPool2d::new(2).dilation((1, 0)).forward(&x));
    assert!(
        e.starts_with("[max_pool2d]") && e.contains("dilation"),
        "{e}"
    );
    let e = msg(AvgPool2d::new(2).divisor_override(Some(0)).forward(&x));
    assert!(
        e.starts_with("[avg_pool2d]") && e.contains("divisor_override"),
        "{e}"
    );
    // The dilated window (3 * 2 + 1 = 7) is larger than the input (5): an error in floor
    // mode; with ceil_mode PyTorch keeps one window starting at 0 (checked against it).
    let e = msg(MaxPool2d::new(4).dilation(2).forward(&x));
    assert!(
        e.contains("larger than the padded input") && e.contains("(1, 5, 5, 2)"),
        "{e}"
    );
    let y = MaxPool2d::new(4).dilation(2).ceil_mode(true).forward(&x);
    assert_eq!(y.unwrap().shape(), [1, 1, 1, 2]);
    let e = msg(AvgPool2d::new(2).padding(2).ceil_mode(true).forward(&x));
    assert!(e.contains("half the kernel"), "{e}");
    let e = msg(MaxPool1d::new(2).ceil_mode(true).forward(&x));
    assert!(e.contains("(N, L, C)"), "{e}");
}

#[test]
fn transformer_stacks_match_pytorch_f64() {
    let cases = cases_of(&["encoder_stack", "decoder_stack", "transformer"]);
    assert_eq!(cases.len(), 6);
    for c in &cases {
        check_case(c, Dtype::F64, 1e-9);
    }
}

#[test]
fn transformer_stacks_match_pytorch_f32() {
    for c in &cases_of(&["encoder_stack", "decoder_stack", "transformer"]) {
        check_case(c, Dtype::F32, 2e-4);
    }
}

fn small_config(dropout: f64) -> TransformerConfig {
    let mut c = TransformerConfig::new(4, 2);
    c.dim_feedforward = 8;
    c.dropout = dropout;
    c
}

#[test]
fn transformer_init_names_and_stack_semantics() {
    let t = Transformer::new(small_config(0.1), 2, 3, &key(50)).unwrap();
    let p = t.parameters();
    for k in [
        "encoder.layers.1.self_attn.in_proj_weight",
        "encoder.norm.weight",
        "decoder.layers.2.multihead_attn.out_proj.bias",
        "decoder.norm.bias",
    ] {
        assert!(p.contains_key(k), "{k}");
    }
    assert!(!p.contains_key("encoder.layers.2.linear1.weight"));
    // PyTorch's init: every matrix Xavier-uniform (a fresh draw per layer), inside its bound.
    let a = &p["encoder.layers.0.linear1.weight"];
    let b = &p["encoder.layers.1.linear1.weight"];
    let (va, vb) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert_ne!(va, vb);
    let bound = (6.0f32 / (4 + 8) as f32).sqrt();
    assert!(va.iter().all(|v| v.abs() <= bound));
    assert!(va.iter().any(|v| v.abs() > bound / 2.0));
    // A stack of clones: identical layers, so the stack is the layer applied twice.
    let layer = TransformerEncoderLayer::new(small_config(0.0), &key(51)).unwrap();
    let stack = TransformerEncoder::new(&layer, 2, None);
    let x = random::normal(&[2, 3, 4], Dtype::F32, 0.0, 1.0, Some(&key(52))).unwrap();
    let twice = layer.forward(&layer.forward(&x).unwrap()).unwrap();
    close("stack", &stack.forward(&x).unwrap(), &twice, 1e-6);
    // The final norm applies after the last layer.
    let norm = LayerNorm::new(4, 1e-5, true).unwrap();
    let normed = TransformerEncoder::new(&layer, 2, Some(norm.clone()));
    close(
        "final norm",
        &normed.forward(&x).unwrap(),
        &norm.forward(&twice).unwrap(),
        1e-6,
    );
    // The mask helper is PyTorch's: 0 on and below the diagonal, -inf above.
    let m = Transformer::generate_square_subsequent_mask(3, Dtype::F32).unwrap();
    let i = f32::NEG_INFINITY;
    assert_eq!(
        m.to_vec::<f32>().unwrap(),
        vec![0.0, i, i, 0.0, 0.0, i, 0.0, 0.0, 0.0]
    );
    // Causal flag = the explicit mask, through the whole model.
    let src = random::normal(&[2, 5, 4], Dtype::F32, 0.0, 1.0, Some(&key(53))).unwrap();
    let flag = TransformerOptions {
        tgt_causal: true,
        ..Default::default()
    };
    let explicit = TransformerOptions {
        tgt_mask: Some(&m),
        ..Default::default()
    };
    close(
        "causal flag",
        &t.forward_with(&src, &x, &flag).unwrap(),
        &t.forward_with(&src, &x, &explicit).unwrap(),
        1e-6,
    );
    // A state_dict round trip through a differently initialised model.
    let mut u = Transformer::new(small_config(0.1), 2, 3, &key(54)).unwrap();
    u.load_parameters(&p).unwrap();
    close(
        "reloaded",
        &u.forward_with(&src, &x, &flag).unwrap(),
        &t.forward_with(&src, &x, &flag).unwrap(),
        0.0,
    );
}

#[test]
fn transformer_dropout_keys() {
    let t = Transformer::new(small_config(0.3), 1, 2, &key(60)).unwrap();
    let src = random::normal(&[2, 5, 4], Dtype::F32, 0.0, 1.0, Some(&key(61))).unwrap();
    let tgt = random::normal(&[2, 3, 4], Dtype::F32, 0.0, 1.0, Some(&key(62))).unwrap();
    let plain = t
        .forward_with(&src, &tgt, &TransformerOptions::default())
        .unwrap();
    let k = key(63);
    let o = TransformerOptions {
        dropout_key: Some(&k),
        ..Default::default()
    };
    let a = t.forward_with(&src, &tgt, &o).unwrap();
    close(
        "same key",
        &t.forward_with(&src, &tgt, &o).unwrap(),
        &a,
        0.0,
    );
    assert!(
        !ops::allclose(&a, &plain, 1e-4, 1e-4, false)
            .unwrap()
            .item::<bool>()
            .unwrap()
    );
    // Each layer of a stack draws its own mask: a stack of two clones with dropout differs
    // from the layer applied twice with the same key.
    let layer = TransformerEncoderLayer::new(small_config(0.5), &key(64)).unwrap();
    let stack = TransformerEncoder::new(&layer, 2, None);
    let eo = EncoderOptions {
        dropout_key: Some(&k),
        ..Default::default()
    };
    let y = stack.forward_with(&src, &eo).unwrap();
    let same = layer
        .forward_with(&layer.forward_with(&src, &eo).unwrap(), &eo)
        .unwrap();
    assert!(
        !ops::allclose(&y, &same, 1e-4, 1e-4, false)
            .unwrap()
            .item::<bool>()
            .unwrap()
    );
}

#[test]
fn transformer_errors() {
    let t = Transformer::new(small_config(0.0), 1, 1, &key(70)).unwrap();
    let src = ops::zeros(&[2, 5, 4], Dtype::F32).unwrap();
    let tgt = ops::zeros(&[3, 3, 4], Dtype::F32).unwrap();
    let o = TransformerOptions::default();
    let e = t.forward_with(&src, &tgt, &o).unwrap_err().to_string();
    assert!(
        e.contains("[Transformer]") && e.contains("(2, 5, 4)") && e.contains("(3, 3, 4)"),
        "{e}"
    );
    let e = t.forward(&src).unwrap_err().to_string();
    assert!(e.contains("src") && e.contains("tgt"), "{e}");
    let bad = ops::zeros(&[2, 5, 6], Dtype::F32).unwrap();
    let e = t
        .forward_with(&bad, &ops::zeros(&[2, 3, 4], Dtype::F32).unwrap(), &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(2, 5, 6)"), "{e}");
    // A key padding mask of the wrong size reaches the attention's check.
    let kpm = ops::zeros(&[2, 4], Dtype::Bool).unwrap();
    let o = TransformerOptions {
        src_key_padding_mask: Some(&kpm),
        ..Default::default()
    };
    let e = t
        .forward_with(&src, &ops::zeros(&[2, 3, 4], Dtype::F32).unwrap(), &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("key_padding_mask"), "{e}");

    let dec_layer = TransformerDecoderLayer::new(small_config(0.0), &key(71)).unwrap();
    let dec = TransformerDecoder::new(&dec_layer, 2, None);
    let e = dec.forward(&src).unwrap_err().to_string();
    assert!(
        e.contains("TransformerDecoder") && e.contains("memory"),
        "{e}"
    );

    // Names: a layer index out of range, a final norm that does not exist, a stray name.
    let enc_layer = TransformerEncoderLayer::new(small_config(0.0), &key(72)).unwrap();
    let mut enc = TransformerEncoder::new(&enc_layer, 2, None);
    let w = ops::zeros(&[4], Dtype::F32).unwrap();
    for bad in [
        "layers.2.norm1.weight",
        "norm.weight",
        "layers.x.norm1.weight",
        "weight",
    ] {
        let mut p = Params::new();
        p.insert(bad.into(), w.clone());
        let e = enc.load_parameters(&p).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("TransformerEncoder"), "{e}");
    }
    let mut p = Params::new();
    p.insert("layers.1.norm1.nope".into(), w.clone());
    assert!(enc.load_parameters(&p).is_err());
    let mut tt = t.clone();
    let mut p = Params::new();
    p.insert("encoderx.norm.weight".into(), w);
    assert!(tt.load_parameters(&p).is_err());
}

/// The Dropout layer: PyTorch's scaling, training/evaluation switch (also through Sequential),
/// the same mask as the function for the same key, its gradient, and p outside [0, 1).
#[test]
fn dropout_layer() {
    let x = random::normal(&[4000], Dtype::F32, 0.0, 1.0, Some(&key(80))).unwrap();
    let mut d = Dropout::new(0.25).unwrap();
    assert!(d.training, "modules start in training mode");
    let k = key(81);
    let y = d.forward_with_key(&x, &k).unwrap();
    close(
        "function",
        &y,
        &dropout(&x, 0.25, true, Some(&k)).unwrap(),
        0.0,
    );
    let (xv, yv) = (x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap());
    let dropped = yv.iter().filter(|&&v| v == 0.0).count() as f64 / 4000.0;
    assert!((dropped - 0.25).abs() < 0.03, "dropped {dropped}");
    for (a, b) in xv.iter().zip(&yv) {
        assert!(*b == 0.0 || (b - a / 0.75).abs() < 1e-6);
    }
    // The gradient is the mask scaled by 1 / (1 - p).
    let (_, g) = transforms::value_and_grad(
        |a| {
            let y = d.forward_with_key(&a[0], &k)?;
            ops::sum(&y, ops::Axes::All, false)
        },
        std::slice::from_ref(&x),
    )
    .unwrap();
    let gv = g[0].to_vec::<f32>().unwrap();
    for (gi, yi) in gv.iter().zip(&yv) {
        let want = if *yi == 0.0 { 0.0 } else { 1.0 / 0.75 };
        assert!((gi - want).abs() < 1e-6);
    }
    // Module::forward uses the global key: two calls draw different masks.
    let a = d.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let b = d.forward(&x).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(a, b);
    d.eval();
    close("eval", &d.forward(&x).unwrap(), &x, 0.0);
    d.train();
    assert!(d.forward(&x).unwrap().to_vec::<f32>().unwrap() != xv);
    // Inside a Sequential, set_training switches it.
    let l = Linear::new(4, 4, true, &key(82)).unwrap();
    let mut s = Sequential::new()
        .push(l.clone())
        .push_layer(Dropout::new(0.5).unwrap());
    let h = random::normal(&[8, 4], Dtype::F32, 0.0, 1.0, Some(&key(83))).unwrap();
    let lin = l.forward(&h).unwrap();
    assert!(s.forward(&h).unwrap().to_vec::<f32>().unwrap() != lin.to_vec::<f32>().unwrap());
    s.set_training(false);
    close("sequential eval", &s.forward(&h).unwrap(), &lin, 0.0);
    assert_eq!(s.parameters().len(), 2);
    // Errors.
    for p in [1.0, -0.1, f64::NAN] {
        let e = Dropout::new(p).unwrap_err().to_string();
        assert!(e.contains("Dropout") && e.contains("[0, 1)"), "{e}");
    }
    let mut p = Params::new();
    p.insert("weight".into(), x.clone());
    assert!(d.load_parameters(&p).is_err());
}
