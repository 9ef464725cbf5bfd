//! PyTorch's `nn.TransformerEncoderLayer` and `nn.TransformerDecoderLayer` with
//! `batch_first=True`, their stacks `nn.TransformerEncoder` / `nn.TransformerDecoder`
//! ([`TransformerEncoder`], [`TransformerDecoder`]: `layers.{i}.*` and an optional final
//! `norm`) and the encoder-decoder `nn.Transformer` ([`Transformer`]: `encoder.*`,
//! `decoder.*`): inputs `(N, L, d_model)`, the same parameter names as PyTorch's
//! `state_dict` (`self_attn.in_proj_weight`, `linear1.weight`, `norm1.bias`, ...; see
//! [`crate::attention`] for the attention parameters), built from [`MultiHeadAttention`],
//! [`Linear`] and [`LayerNorm`].
//!
//! Dropout (attention weights, after each block, inside the feed-forward) applies only when
//! a key is passed in the options; `Module::forward` is the deterministic (evaluation) pass.
//! Masks follow [`MultiHeadAttention`]: bool `true` = not allowed, float = additive; the
//! `causal` flags build the causal mask (PyTorch's `is_causal` is only a hint and needs the
//! mask itself).

use crate::Module;
use crate::attention::{
    AttentionOptions, MultiHeadAttention, causal_mask, check_names, err, prefixed, sub_params,
    subkey,
};
use crate::layers::{LayerNorm, Linear, dropout};
use tessera_core::transforms::Params;
use tessera_core::{Array, Dtype, Result, ops, random};

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// The exact (erf) GELU, PyTorch's `"gelu"`.
    Gelu,
}

impl Activation {
    pub fn apply(self, x: &Array) -> Result<Array> {
        match self {
            Activation::Relu => ops::maximum(x, &Array::scalar_of(0.0, x.dtype())),
            Activation::Gelu => {
                let dt = x.dtype();
                let e = ops::erf(&ops::multiply(
                    x,
                    &Array::scalar_of(std::f64::consts::FRAC_1_SQRT_2, dt),
                )?)?;
                let h = ops::add(&e, &Array::scalar_of(1.0, dt))?;
                ops::multiply(&ops::multiply(x, &h)?, &Array::scalar_of(0.5, dt))
            }
        }
    }
}

/// The sizes and switches shared by both layers (PyTorch's constructor arguments).
#[derive(Clone, Copy, Debug)]
pub struct TransformerConfig {
    pub d_model: usize,
    pub nhead: usize,
    pub dim_feedforward: usize,
    pub dropout: f64,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    /// Pre-norm (`x + f(norm(x))`) instead of post-norm (`norm(x + f(x))`).
    pub norm_first: bool,
    /// Biases in the linear and attention layers and the layer norms (PyTorch's `bias`).
    pub bias: bool,
}

impl TransformerConfig {
    /// PyTorch's defaults: dim_feedforward 2048, dropout 0.1, ReLU, eps 1e-5, post-norm, biases.
    pub fn new(d_model: usize, nhead: usize) -> TransformerConfig {
        TransformerConfig {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: Activation::Relu,
            layer_norm_eps: 1e-5,
            norm_first: false,
            bias: true,
        }
    }
}

fn layer_norm(c: &TransformerConfig) -> Result<LayerNorm> {
    let mut n = LayerNorm::new(c.d_model, c.layer_norm_eps, true)?;
    if !c.bias {
        n.bias = None;
    }
    Ok(n)
}

/// `dropout` with the `i`-th of the split keys, or the identity.
fn drop(x: Array, p: f64, keys: &Option<Array>, i: usize) -> Result<Array> {
    match keys {
        Some(k) if p > 0.0 => dropout(&x, p, true, Some(&subkey(k, i)?)),
        _ => Ok(x),
    }
}

fn split_keys(key: Option<&Array>, n: usize) -> Result<Option<Array>> {
    key.map(|k| random::split(k, n)).transpose()
}

fn feed_forward(
    c: &TransformerConfig,
    l1: &Linear,
    l2: &Linear,
    x: &Array,
    keys: &Option<Array>,
    i: usize,
) -> Result<Array> {
    let h = c.activation.apply(&l1.forward(x)?)?;
    l2.forward(&drop(h, c.dropout, keys, i)?)
}

fn check_input(layer: &str, what: &str, x: &Array, d: usize) -> Result<()> {
    if !(x.ndim() == 3 || x.ndim() == 2) || x.shape()[x.ndim() - 1] != d {
        return Err(err(
            layer,
            format!(
                "{what} must be (N, L, {d}) (batch_first) or unbatched (L, {d}), got {}",
                crate::conv::fmt_shape(x.shape())
            ),
        ));
    }
    Ok(())
}

/// Optional arguments of [`TransformerEncoderLayer::forward_with`].
#[derive(Clone, Copy, Default)]
pub struct EncoderOptions<'a> {
    pub src_mask: Option<&'a Array>,
    pub src_key_padding_mask: Option<&'a Array>,
    pub causal: bool,
    pub dropout_key: Option<&'a Array>,
}

/// PyTorch's `nn.TransformerEncoderLayer(..., batch_first=True)`: self-attention and a
/// feed-forward block (`linear2(dropout(activation(linear1(x))))`), each with a residual and a
/// layer norm (after the residual, or before the block with `norm_first`).
#[derive(Clone)]
pub struct TransformerEncoderLayer {
    pub config: TransformerConfig,
    pub self_attn: MultiHeadAttention,
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
}

const ENC: &str = "TransformerEncoderLayer";
const DEC: &str = "TransformerDecoderLayer";

impl TransformerEncoderLayer {
    pub fn new(config: TransformerConfig, key: &Array) -> Result<TransformerEncoderLayer> {
        let c = config;
        let keys = random::split(key, 3)?;
        Ok(TransformerEncoderLayer {
            config,
            self_attn: MultiHeadAttention::new(
                c.d_model,
                c.nhead,
                c.dropout,
                c.bias,
                &subkey(&keys, 0)?,
            )?,
            linear1: Linear::new(c.d_model, c.dim_feedforward, c.bias, &subkey(&keys, 1)?)?,
            linear2: Linear::new(c.dim_feedforward, c.d_model, c.bias, &subkey(&keys, 2)?)?,
            norm1: layer_norm(&c)?,
            norm2: layer_norm(&c)?,
        })
    }

    pub fn forward_with(&self, src: &Array, opts: &EncoderOptions) -> Result<Array> {
        let c = &self.config;
        check_input(ENC, "src", src, c.d_model)?;
        // Keys: 0 attention weights, 1 after attention, 2 inside the feed-forward, 3 after it.
        let keys = split_keys(opts.dropout_key, 4)?;
        let k0 = keys.as_ref().map(|k| subkey(k, 0)).transpose()?;
        let sa = |x: &Array| -> Result<Array> {
            let o = AttentionOptions {
                key_padding_mask: opts.src_key_padding_mask,
                attn_mask: opts.src_mask,
                causal: opts.causal,
                dropout_key: k0.as_ref(),
            };
            drop(
                self.self_attn.forward_with(x, x, x, &o)?,
                c.dropout,
                &keys,
                1,
            )
        };
        let ff = |x: &Array| -> Result<Array> {
            drop(
                feed_forward(c, &self.linear1, &self.linear2, x, &keys, 2)?,
                c.dropout,
                &keys,
                3,
            )
        };
        if c.norm_first {
            let x = ops::add(src, &sa(&self.norm1.forward(src)?)?)?;
            ops::add(&x, &ff(&self.norm2.forward(&x)?)?)
        } else {
            let x = self.norm1.forward(&ops::add(src, &sa(src)?)?)?;
            self.norm2.forward(&ops::add(&x, &ff(&x)?)?)
        }
    }
}

impl Module for TransformerEncoderLayer {
    fn parameters(&self) -> Params {
        let mut p = prefixed("self_attn", self.self_attn.parameters());
        p.extend(prefixed("linear1", self.linear1.parameters()));
        p.extend(prefixed("linear2", self.linear2.parameters()));
        p.extend(prefixed("norm1", self.norm1.parameters()));
        p.extend(prefixed("norm2", self.norm2.parameters()));
        p
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        check_names(
            ENC,
            params,
            &["self_attn", "linear1", "linear2", "norm1", "norm2"],
            &[],
        )?;
        self.self_attn
            .load_parameters(&sub_params("self_attn", params))?;
        self.linear1
            .load_parameters(&sub_params("linear1", params))?;
        self.linear2
            .load_parameters(&sub_params("linear2", params))?;
        self.norm1.load_parameters(&sub_params("norm1", params))?;
        self.norm2.load_parameters(&sub_params("norm2", params))
    }

    /// The layer without masks or dropout.
    fn forward(&self, x: &Array) -> Result<Array> {
        self.forward_with(x, &EncoderOptions::default())
    }
}

/// Optional arguments of [`TransformerDecoderLayer::forward_with`].
#[derive(Clone, Copy, Default)]
pub struct DecoderOptions<'a> {
    pub tgt_mask: Option<&'a Array>,
    pub memory_mask: Option<&'a Array>,
    pub tgt_key_padding_mask: Option<&'a Array>,
    pub memory_key_padding_mask: Option<&'a Array>,
    /// Causal self-attention over the target.
    pub tgt_causal: bool,
    pub memory_causal: bool,
    pub dropout_key: Option<&'a Array>,
}

/// PyTorch's `nn.TransformerDecoderLayer(..., batch_first=True)`: self-attention over the
/// target, attention over the memory (`multihead_attn`), feed-forward; three residuals and
/// layer norms (`norm1`..`norm3`).
///
/// [`Module::forward`] has no memory to attend to and returns an error: use
/// [`TransformerDecoderLayer::forward_with`].
#[derive(Clone)]
pub struct TransformerDecoderLayer {
    pub config: TransformerConfig,
    pub self_attn: MultiHeadAttention,
    pub multihead_attn: MultiHeadAttention,
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub norm3: LayerNorm,
}

impl TransformerDecoderLayer {
    pub fn new(config: TransformerConfig, key: &Array) -> Result<TransformerDecoderLayer> {
        let c = config;
        let keys = random::split(key, 4)?;
        let mha = |i: usize| {
            MultiHeadAttention::new(c.d_model, c.nhead, c.dropout, c.bias, &subkey(&keys, i)?)
        };
        Ok(TransformerDecoderLayer {
            config,
            self_attn: mha(0)?,
            multihead_attn: mha(1)?,
            linear1: Linear::new(c.d_model, c.dim_feedforward, c.bias, &subkey(&keys, 2)?)?,
            linear2: Linear::new(c.dim_feedforward, c.d_model, c.bias, &subkey(&keys, 3)?)?,
            norm1: layer_norm(&c)?,
            norm2: layer_norm(&c)?,
            norm3: layer_norm(&c)?,
        })
    }

    /// `tgt` `(N, T, d_model)` attending to itself and to `memory` `(N, S, d_model)`.
    pub fn forward_with(
        &self,
        tgt: &Array,
        memory: &Array,
        opts: &DecoderOptions,
    ) -> Result<Array> {
        let c = &self.config;
        check_input(DEC, "tgt", tgt, c.d_model)?;
        check_input(DEC, "memory", memory, c.d_model)?;
        if tgt.ndim() != memory.ndim() || (tgt.ndim() == 3 && tgt.shape()[0] != memory.shape()[0]) {
            return Err(err(
                DEC,
                format!(
                    "tgt {} and memory {} must have the same batch",
                    crate::conv::fmt_shape(tgt.shape()),
                    crate::conv::fmt_shape(memory.shape())
                ),
            ));
        }
        // Keys: 0/1 attention weights, 2 after self-attention, 3 after cross-attention,
        // 4 inside the feed-forward, 5 after it.
        let keys = split_keys(opts.dropout_key, 6)?;
        let k = |i| keys.as_ref().map(|k| subkey(k, i)).transpose();
        let (k0, k1) = (k(0)?, k(1)?);
        let sa = |x: &Array| -> Result<Array> {
            let o = AttentionOptions {
                key_padding_mask: opts.tgt_key_padding_mask,
                attn_mask: opts.tgt_mask,
                causal: opts.tgt_causal,
                dropout_key: k0.as_ref(),
            };
            drop(
                self.self_attn.forward_with(x, x, x, &o)?,
                c.dropout,
                &keys,
                2,
            )
        };
        let mha = |x: &Array| -> Result<Array> {
            let o = AttentionOptions {
                key_padding_mask: opts.memory_key_padding_mask,
                attn_mask: opts.memory_mask,
                causal: opts.memory_causal,
                dropout_key: k1.as_ref(),
            };
            drop(
                self.multihead_attn.forward_with(x, memory, memory, &o)?,
                c.dropout,
                &keys,
                3,
            )
        };
        let ff = |x: &Array| -> Result<Array> {
            drop(
                feed_forward(c, &self.linear1, &self.linear2, x, &keys, 4)?,
                c.dropout,
                &keys,
                5,
            )
        };
        if c.norm_first {
            let x = ops::add(tgt, &sa(&self.norm1.forward(tgt)?)?)?;
            let x = ops::add(&x, &mha(&self.norm2.forward(&x)?)?)?;
            ops::add(&x, &ff(&self.norm3.forward(&x)?)?)
        } else {
            let x = self.norm1.forward(&ops::add(tgt, &sa(tgt)?)?)?;
            let x = self.norm2.forward(&ops::add(&x, &mha(&x)?)?)?;
            self.norm3.forward(&ops::add(&x, &ff(&x)?)?)
        }
    }
}

impl Module for TransformerDecoderLayer {
    fn parameters(&self) -> Params {
        let mut p = prefixed("self_attn", self.self_attn.parameters());
        p.extend(prefixed("multihead_attn", self.multihead_attn.parameters()));
        p.extend(prefixed("linear1", self.linear1.parameters()));
        p.extend(prefixed("linear2", self.linear2.parameters()));
        p.extend(prefixed("norm1", self.norm1.parameters()));
        p.extend(prefixed("norm2", self.norm2.parameters()));
        p.extend(prefixed("norm3", self.norm3.parameters()));
        p
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        check_names(
            DEC,
            params,
            &[
                "self_attn",
                "multihead_attn",
                "linear1",
                "linear2",
                "norm1",
                "norm2",
                "norm3",
            ],
            &[],
        )?;
        self.self_attn
            .load_parameters(&sub_params("self_attn", params))?;
        self.multihead_attn
            .load_parameters(&sub_params("multihead_attn", params))?;
        self.linear1
            .load_parameters(&sub_params("linear1", params))?;
        self.linear2
            .load_parameters(&sub_params("linear2", params))?;
        self.norm1.load_parameters(&sub_params("norm1", params))?;
        self.norm2.load_parameters(&sub_params("norm2", params))?;
        self.norm3.load_parameters(&sub_params("norm3", params))
    }

    /// An error: the decoder needs a memory ([`TransformerDecoderLayer::forward_with`]).
    fn forward(&self, x: &Array) -> Result<Array> {
        Err(err(
            DEC,
            format!(
                "forward needs a memory: call forward_with(tgt, memory, options) (tgt {})",
                crate::conv::fmt_shape(x.shape())
            ),
        ))
    }
}

/// `params` of the stack's layers (`layers.{i}.*`) and its final norm (`norm.*`).
fn stack_parameters<M: Module>(layers: &[M], norm: &Option<LayerNorm>) -> Params {
    let mut p = Params::new();
    for (i, l) in layers.iter().enumerate() {
        p.extend(prefixed(&format!("layers.{i}"), l.parameters()));
    }
    if let Some(n) = norm {
        p.extend(prefixed("norm", n.parameters()));
    }
    p
}

/// Loads `layers.{i}.*` into layer `i` and `norm.*` into the final norm.
fn load_stack<M: Module>(
    name: &str,
    layers: &mut [M],
    norm: &mut Option<LayerNorm>,
    params: &Params,
) -> Result<()> {
    let mut per = vec![Params::new(); layers.len()];
    let mut norm_p = Params::new();
    let count = layers.len();
    for (k, v) in params {
        let bad = || {
            err(
                name,
                format!(
                    "no parameter named {k} (names are layers.<i>.<name> with i < {count}{})",
                    if norm.is_some() {
                        ", and norm.<name>"
                    } else {
                        "; there is no final norm"
                    }
                ),
            )
        };
        if let Some(rest) = k.strip_prefix("norm.") {
            if norm.is_none() {
                return Err(bad());
            }
            norm_p.insert(rest.to_string(), v.clone());
            continue;
        }
        let rest = k.strip_prefix("layers.").ok_or_else(bad)?;
        let (idx, field) = rest.split_once('.').ok_or_else(bad)?;
        let i: usize = idx.parse().map_err(|_| bad())?;
        per.get_mut(i)
            .ok_or_else(bad)?
            .insert(field.to_string(), v.clone());
    }
    for (l, p) in layers.iter_mut().zip(&per) {
        if !p.is_empty() {
            l.load_parameters(p)?;
        }
    }
    match norm {
        Some(n) if !norm_p.is_empty() => n.load_parameters(&norm_p),
        _ => Ok(()),
    }
}

/// One dropout key per layer of a stack, if any.
fn layer_keys(key: Option<&Array>, n: usize) -> Result<Vec<Option<Array>>> {
    match key {
        Some(k) if n > 0 => {
            let ks = random::split(k, n)?;
            (0..n).map(|i| subkey(&ks, i).map(Some)).collect()
        }
        _ => Ok(vec![None; n]),
    }
}

const ENC_STACK: &str = "TransformerEncoder";
const DEC_STACK: &str = "TransformerDecoder";

/// PyTorch's `nn.TransformerEncoder(encoder_layer, num_layers, norm)`: `num_layers` copies of
/// an encoder layer applied in turn, every one with the same masks, then the optional final
/// [`LayerNorm`]. Parameters `layers.{i}.self_attn.in_proj_weight`, ..., `norm.weight`,
/// `norm.bias`, as PyTorch's `state_dict`.
///
/// PyTorch's inference fast path (nested tensors, taken without gradients in evaluation mode)
/// returns zeros at the positions `src_key_padding_mask` pads; this, like PyTorch's regular
/// path, computes them as any other position.
#[derive(Clone)]
pub struct TransformerEncoder {
    pub layers: Vec<TransformerEncoderLayer>,
    pub norm: Option<LayerNorm>,
}

impl TransformerEncoder {
    /// `num_layers` clones of `layer` (identical parameters, as PyTorch's deep copies).
    pub fn new(
        layer: &TransformerEncoderLayer,
        num_layers: usize,
        norm: Option<LayerNorm>,
    ) -> TransformerEncoder {
        TransformerEncoder {
            layers: vec![layer.clone(); num_layers],
            norm,
        }
    }

    /// `src` `(N, S, d_model)` (or unbatched `(S, d_model)`) through every layer with the same
    /// masks; each layer gets its own dropout key split from `opts.dropout_key`.
    pub fn forward_with(&self, src: &Array, opts: &EncoderOptions) -> Result<Array> {
        let keys = layer_keys(opts.dropout_key, self.layers.len())?;
        let mut x = src.clone();
        for (l, k) in self.layers.iter().zip(&keys) {
            let o = EncoderOptions {
                dropout_key: k.as_ref(),
                ..*opts
            };
            x = l.forward_with(&x, &o)?;
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

impl Module for TransformerEncoder {
    fn parameters(&self) -> Params {
        stack_parameters(&self.layers, &self.norm)
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        load_stack(ENC_STACK, &mut self.layers, &mut self.norm, params)
    }

    /// The stack without masks or dropout.
    fn forward(&self, x: &Array) -> Result<Array> {
        self.forward_with(x, &EncoderOptions::default())
    }
}

/// PyTorch's `nn.TransformerDecoder(decoder_layer, num_layers, norm)`: `num_layers` copies of a
/// decoder layer, each attending to the same memory with the same masks, then the optional
/// final [`LayerNorm`]. Parameters `layers.{i}.multihead_attn.in_proj_weight`, ...,
/// `norm.weight`. [`Module::forward`] has no memory and returns an error.
#[derive(Clone)]
pub struct TransformerDecoder {
    pub layers: Vec<TransformerDecoderLayer>,
    pub norm: Option<LayerNorm>,
}

impl TransformerDecoder {
    /// `num_layers` clones of `layer` (identical parameters, as PyTorch's deep copies).
    pub fn new(
        layer: &TransformerDecoderLayer,
        num_layers: usize,
        norm: Option<LayerNorm>,
    ) -> TransformerDecoder {
        TransformerDecoder {
            layers: vec![layer.clone(); num_layers],
            norm,
        }
    }

    /// `tgt` `(N, T, d_model)` through every layer, each attending to `memory`
    /// `(N, S, d_model)`; each layer gets its own dropout key.
    pub fn forward_with(
        &self,
        tgt: &Array,
        memory: &Array,
        opts: &DecoderOptions,
    ) -> Result<Array> {
        let keys = layer_keys(opts.dropout_key, self.layers.len())?;
        let mut x = tgt.clone();
        for (l, k) in self.layers.iter().zip(&keys) {
            let o = DecoderOptions {
                dropout_key: k.as_ref(),
                ..*opts
            };
            x = l.forward_with(&x, memory, &o)?;
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

impl Module for TransformerDecoder {
    fn parameters(&self) -> Params {
        stack_parameters(&self.layers, &self.norm)
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        load_stack(DEC_STACK, &mut self.layers, &mut self.norm, params)
    }

    /// An error: the decoder needs a memory ([`TransformerDecoder::forward_with`]).
    fn forward(&self, x: &Array) -> Result<Array> {
        Err(err(
            DEC_STACK,
            format!(
                "forward needs a memory: call forward_with(tgt, memory, options) (tgt {})",
                crate::conv::fmt_shape(x.shape())
            ),
        ))
    }
}

/// Optional arguments of [`Transformer::forward_with`] (PyTorch's keyword arguments of
/// `nn.Transformer.forward`; the `*_causal` flags build the causal masks themselves).
#[derive(Clone, Copy, Default)]
pub struct TransformerOptions<'a> {
    pub src_mask: Option<&'a Array>,
    pub tgt_mask: Option<&'a Array>,
    pub memory_mask: Option<&'a Array>,
    pub src_key_padding_mask: Option<&'a Array>,
    pub tgt_key_padding_mask: Option<&'a Array>,
    pub memory_key_padding_mask: Option<&'a Array>,
    pub src_causal: bool,
    /// Causal self-attention over the target (the usual decoder setting).
    pub tgt_causal: bool,
    pub memory_causal: bool,
    pub dropout_key: Option<&'a Array>,
}

const TRANSFORMER: &str = "Transformer";

/// PyTorch's `nn.Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers,
/// dim_feedforward, dropout, activation, layer_norm_eps, batch_first=True, norm_first, bias)`:
/// a [`TransformerEncoder`] and a [`TransformerDecoder`], each with a final [`LayerNorm`].
/// Parameters `encoder.layers.{i}.*`, `encoder.norm.*`, `decoder.layers.{i}.*`,
/// `decoder.norm.*`, as PyTorch's `state_dict`. [`Module::forward`] has no target and returns
/// an error.
#[derive(Clone)]
pub struct Transformer {
    pub encoder: TransformerEncoder,
    pub decoder: TransformerDecoder,
}

impl Transformer {
    /// PyTorch's initialisation: every parameter with more than one dimension Xavier-uniform,
    /// the rest (biases, norms) as the layers start them.
    pub fn new(
        config: TransformerConfig,
        num_encoder_layers: usize,
        num_decoder_layers: usize,
        key: &Array,
    ) -> Result<Transformer> {
        let keys = random::split(key, 3)?;
        let enc = TransformerEncoderLayer::new(config, &subkey(&keys, 0)?)?;
        let dec = TransformerDecoderLayer::new(config, &subkey(&keys, 1)?)?;
        let mut t = Transformer {
            encoder: TransformerEncoder::new(&enc, num_encoder_layers, Some(layer_norm(&config)?)),
            decoder: TransformerDecoder::new(&dec, num_decoder_layers, Some(layer_norm(&config)?)),
        };
        let params = t.parameters();
        let matrices: Vec<(&String, &Array)> =
            params.iter().filter(|(_, v)| v.ndim() > 1).collect();
        let init_keys = random::split(&subkey(&keys, 2)?, matrices.len().max(1))?;
        let mut fresh = Params::new();
        for (i, (name, v)) in matrices.into_iter().enumerate() {
            let w =
                crate::init::xavier_uniform(v.shape(), v.dtype(), 1.0, &subkey(&init_keys, i)?)?;
            fresh.insert(name.clone(), w);
        }
        t.load_parameters(&fresh)?;
        Ok(t)
    }

    /// PyTorch's `Transformer.generate_square_subsequent_mask(sz)`: the additive causal mask
    /// `(sz, sz)`, `-inf` above the diagonal.
    pub fn generate_square_subsequent_mask(sz: usize, dtype: Dtype) -> Result<Array> {
        causal_mask(sz, sz, dtype)
    }

    /// The encoder over `src` `(N, S, d_model)`, then the decoder over `tgt` `(N, T, d_model)`
    /// attending to the encoder's output; `(N, T, d_model)`. Unbatched `(S, d_model)` /
    /// `(T, d_model)` too.
    pub fn forward_with(
        &self,
        src: &Array,
        tgt: &Array,
        opts: &TransformerOptions,
    ) -> Result<Array> {
        let batched = |x: &Array| x.ndim() == 3;
        if src.ndim() != tgt.ndim() || (batched(src) && src.shape()[0] != tgt.shape()[0]) {
            return Err(err(
                TRANSFORMER,
                format!(
                    "the batch of src {} and tgt {} must be equal (both (N, len, d_model) or both unbatched)",
                    crate::conv::fmt_shape(src.shape()),
                    crate::conv::fmt_shape(tgt.shape())
                ),
            ));
        }
        let (ek, dk) = match opts.dropout_key {
            Some(k) => {
                let ks = random::split(k, 2)?;
                (Some(subkey(&ks, 0)?), Some(subkey(&ks, 1)?))
            }
            None => (None, None),
        };
        let memory = self.encoder.forward_with(
            src,
            &EncoderOptions {
                src_mask: opts.src_mask,
                src_key_padding_mask: opts.src_key_padding_mask,
                causal: opts.src_causal,
                dropout_key: ek.as_ref(),
            },
        )?;
        self.decoder.forward_with(
            tgt,
            &memory,
            &DecoderOptions {
                tgt_mask: opts.tgt_mask,
                memory_mask: opts.memory_mask,
                tgt_key_padding_mask: opts.tgt_key_padding_mask,
                memory_key_padding_mask: opts.memory_key_padding_mask,
                tgt_causal: opts.tgt_causal,
                memory_causal: opts.memory_causal,
                dropout_key: dk.as_ref(),
            },
        )
    }
}

impl Module for Transformer {
    fn parameters(&self) -> Params {
        let mut p = prefixed("encoder", self.encoder.parameters());
        p.extend(prefixed("decoder", self.decoder.parameters()));
        p
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        check_names(TRANSFORMER, params, &["encoder", "decoder"], &[])?;
        self.encoder
            .load_parameters(&sub_params("encoder", params))?;
        self.decoder.load_parameters(&sub_params("decoder", params))
    }

    /// An error: the transformer needs a source and a target ([`Transformer::forward_with`]).
    fn forward(&self, x: &Array) -> Result<Array> {
        Err(err(
            TRANSFORMER,
            format!(
                "forward needs a source and a target: call forward_with(src, tgt, options) (got {})",
                crate::conv::fmt_shape(x.shape())
            ),
        ))
    }
}
