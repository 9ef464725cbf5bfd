//! The decoder-only transformer shared by every supported family (Llama, Qwen 2/3, Gemma 3,
//! Phi-3): pre-norm blocks of grouped-query attention with rotary embeddings and a gated MLP.
//! Family differences are switches in [`ModelConfig`]; tensors are named as in GGUF files
//! (`token_embd`, `blk.N.attn_q`, ...), and other formats map their names onto these.

use crate::attention::{causal_mask, sdpa};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gate_up::GateUp;
use crate::kv_cache::KvCache;
pub use crate::linear::Linear;
use crate::linear::LinearGroup;
use crate::rope::Rope;
use crate::weights::{Weight, WeightSource};
use tessera_core::memory::Arena;
use tessera_core::{Array, Dtype, ops};

fn rms_norm(x: &Array, w: &Array, eps: f64) -> Result<Array> {
    Ok(tessera_nn::layers::rms_norm(x, Some(w), eps)?)
}

/// One transformer block.
pub struct Block {
    attn_norm: Array,
    /// q, k and v.
    qkv: LinearGroup,
    o: Linear,
    q_norm: Option<Array>,
    k_norm: Option<Array>,
    post_attn_norm: Option<Array>,
    ffn_norm: Array,
    /// The MLP's gate and up maps, with its activation.
    gate_up: GateUp,
    down: Linear,
    post_ffn_norm: Option<Array>,
    local: bool,
}

impl Block {
    fn load(src: &dyn WeightSource, cfg: &ModelConfig, i: usize, arena: &Arena) -> Result<Block> {
        let p = |s: &str| format!("blk.{i}.{s}");
        let opt = |s: &str| -> Result<Option<Array>> {
            let n = p(s);
            Ok(if src.has(&n) {
                Some(src.vector(&n)?)
            } else {
                None
            })
        };
        let (qd, kd) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
        let qkv = if src.has(&p("attn_qkv.weight")) {
            // Phi-3 stores q, k and v as one matrix.
            LinearGroup::stacked(Linear::load(src, &p("attn_qkv"))?, vec![qd, kd, kd])?
        } else {
            LinearGroup::fuse(vec![
                Linear::load(src, &p("attn_q"))?,
                Linear::load(src, &p("attn_k"))?,
                Linear::load(src, &p("attn_v"))?,
            ])?
        };
        let gate_up = if src.has(&p("ffn_gate.weight")) {
            GateUp::new(
                Linear::load(src, &p("ffn_gate"))?,
                Linear::load(src, &p("ffn_up"))?,
            )?
        } else {
            // Phi-3: gate and up stacked in ffn_up.
            GateUp::stacked(Linear::load(src, &p("ffn_up"))?, cfg.ffn)?
        };
        let block = Block {
            attn_norm: src.vector(&p("attn_norm.weight"))?,
            qkv,
            o: Linear::load(src, &p("attn_output"))?,
            q_norm: opt("attn_q_norm.weight")?,
            k_norm: opt("attn_k_norm.weight")?,
            post_attn_norm: opt("post_attention_norm.weight")?,
            ffn_norm: src.vector(&p("ffn_norm.weight"))?,
            gate_up,
            down: Linear::load(src, &p("ffn_down"))?,
            post_ffn_norm: opt("post_ffw_norm.weight")?,
            local: cfg.is_local_layer(i),
        };
        block.check(cfg, i)?;
        block.for_matmul(arena)
    }

    /// The block with its linear weights in the CPU kernels' preferred layout, in `arena` in
    /// the order a forward pass reads them.
    fn for_matmul(self, arena: &Arena) -> Result<Block> {
        Ok(Block {
            qkv: self.qkv.for_matmul(arena)?,
            o: self.o.for_matmul(arena)?,
            gate_up: self.gate_up.for_matmul(arena)?,
            down: self.down.for_matmul(arena)?,
            ..self
        })
    }

    /// Every matrix of the block, each read once per forward pass.
    fn weights(&self) -> impl Iterator<Item = &Weight> {
        self.qkv
            .weights()
            .chain(std::iter::once(&self.o.weight))
            .chain(self.gate_up.weights())
            .chain(std::iter::once(&self.down.weight))
    }

    fn check(&self, cfg: &ModelConfig, i: usize) -> Result<()> {
        let (h, qd, kd) = (
            cfg.hidden,
            cfg.heads * cfg.head_dim,
            cfg.kv_heads * cfg.head_dim,
        );
        let (qkv, gate_up) = (self.qkv.shapes(), self.gate_up.shapes());
        if qkv.len() != 3 || gate_up.len() != 2 {
            return Err(Error::Config(format!(
                "blk.{i}: expected 3 attention input maps and 2 MLP input maps"
            )));
        }
        let shape = |w: &Weight| (w.out_features(), w.in_features());
        let have = qkv
            .into_iter()
            .chain([shape(&self.o.weight)])
            .chain(gate_up)
            .chain([shape(&self.down.weight)]);
        let want = [
            ("attn_q", (qd, h)),
            ("attn_k", (kd, h)),
            ("attn_v", (kd, h)),
            ("attn_output", (h, qd)),
            ("ffn_gate", (cfg.ffn, h)),
            ("ffn_up", (cfg.ffn, h)),
            ("ffn_down", (h, cfg.ffn)),
        ];
        for ((name, (out, inp)), (wo, wi)) in want.into_iter().zip(have) {
            if (wo, wi) != (out, inp) {
                return Err(Error::Config(format!(
                    "blk.{i}.{name} is {wo}x{wi}, the config implies {out}x{inp}"
                )));
            }
        }
        if cfg.qk_norm && (self.q_norm.is_none() || self.k_norm.is_none()) {
            return Err(Error::Config(format!("blk.{i} lacks its q/k norm weights")));
        }
        Ok(())
    }

    fn forward(
        &self,
        x: &Array,
        cfg: &ModelConfig,
        rope: (&Rope, &Array, &Array),
        cache: &mut KvCache,
        layer: usize,
        masks: &mut Masks,
    ) -> Result<Array> {
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let (h, hk, d) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let eps = cfg.norm_eps;
        let xn = rms_norm(x, &self.attn_norm, eps)?;
        let [q, k, v]: [Array; 3] = self
            .qkv
            .forward(&xn)?
            .try_into()
            .map_err(|_| Error::Config("the qkv group must give three outputs".into()))?;
        let mut q = ops::reshape(&q, &[b, t, h, d])?;
        let mut k = ops::reshape(&k, &[b, t, hk, d])?;
        let v = ops::reshape(&v, &[b, t, hk, d])?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = rms_norm(&q, qn, eps)?;
            k = rms_norm(&k, kn, eps)?;
        }
        let (r, cos, sin) = rope;
        let q = ops::transpose(&r.apply(&q, cos, sin)?, Some(&[0, 2, 1, 3]))?;
        let k = ops::transpose(&r.apply(&k, cos, sin)?, Some(&[0, 2, 1, 3]))?;
        let v = ops::transpose(&v, Some(&[0, 2, 1, 3]))?;
        let kv = cache.update(layer, &k, &v)?;
        let mask = match kv.k_start {
            Some(start) => masks.get(start, kv.keys.shape()[2], self.local)?,
            None => None,
        };
        let a = sdpa(&q, &kv.keys, &kv.values, cfg.attn_scale, mask.as_ref())?;
        let a = ops::reshape(&ops::transpose(&a, Some(&[0, 2, 1, 3]))?, &[b, t, h * d])?;
        let mut a = self.o.forward(&a)?;
        if let Some(n) = &self.post_attn_norm {
            a = rms_norm(&a, n, eps)?;
        }
        let x = ops::add(x, &a)?;
        let xn = rms_norm(&x, &self.ffn_norm, eps)?;
        let mut m = self
            .down
            .forward(&self.gate_up.forward(&xn, cfg.activation)?)?;
        if let Some(n) = &self.post_ffn_norm {
            m = rms_norm(&m, n, eps)?;
        }
        Ok(ops::add(&x, &m)?)
    }
}

/// The attention masks of one forward pass, built once per distinct key range.
struct Masks {
    offset: usize,
    t: usize,
    window: Option<usize>,
    made: Vec<((usize, usize, bool), Option<Array>)>,
}

impl Masks {
    fn get(&mut self, k_start: usize, l: usize, local: bool) -> Result<Option<Array>> {
        let key = (k_start, l, local);
        if let Some((_, m)) = self.made.iter().find(|(k, _)| *k == key) {
            return Ok(m.clone());
        }
        let window = if local { self.window } else { None };
        let m = causal_mask(self.offset, self.t, k_start, l, window)?;
        self.made.push((key, m.clone()));
        Ok(m)
    }
}

/// A loaded language model.
pub struct Model {
    pub config: ModelConfig,
    embed: Weight,
    blocks: Vec<Block>,
    norm: Array,
    lm_head: Weight,
    rope_global: Rope,
    rope_local: Rope,
}

impl Model {
    /// Builds the model from tensors named as in GGUF files.
    pub fn load(
        config: ModelConfig,
        src: &dyn WeightSource,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        config.validate()?;
        // Interleaved where the CPU prefers it: with tied embeddings this is also the output
        // matrix, the largest single read of a decode step.
        // One arena for every matrix, filled in the order a forward pass reads them.
        let arena = Arena::new();
        let embed = src.matrix("token_embd.weight")?.for_matmul(&arena)?;
        if embed.in_features() != config.hidden {
            return Err(Error::Config(format!(
                "token_embd has {} columns, hidden size is {}",
                embed.in_features(),
                config.hidden
            )));
        }
        let mut blocks = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            progress(i, config.layers);
            blocks.push(Block::load(src, &config, i, &arena)?);
        }
        progress(config.layers, config.layers);
        let lm_head = if src.has("output.weight") {
            src.matrix("output.weight")?.for_matmul(&arena)?
        } else {
            embed.clone() // tied embeddings
        };
        if lm_head.in_features() != config.hidden {
            return Err(Error::Config(
                "output matrix does not match the hidden size".into(),
            ));
        }
        let rope_global = Rope::new(&config.rope, config.rope.base);
        let rope_local = Rope::new(
            &config.rope,
            config.rope_local_base.unwrap_or(config.rope.base),
        );
        Ok(Model {
            norm: src.vector("output_norm.weight")?,
            embed,
            blocks,
            lm_head,
            rope_global,
            rope_local,
            config,
        })
    }

    /// A fresh cache for up to `max_len` positions (capped at the model's context length);
    /// sliding-window layers get rotating buffers of their window size. Keys and values are
    /// stored in f16 ([`KvCache::half_precision`]; `full_precision()` keeps f32).
    pub fn new_cache(&self, max_len: usize) -> KvCache {
        let windows: Vec<Option<usize>> = (0..self.config.layers)
            .map(|i| {
                if self.config.is_local_layer(i) {
                    self.config.sliding_window
                } else {
                    None
                }
            })
            .collect();
        KvCache::new(&windows, max_len.min(self.config.context_length.max(1))).half_precision()
    }

    /// [`Model::new_cache`] with keys and values stored in `bits` bits: 16 (f16, the default),
    /// 32 (f32), or 8 (global layers in 8-bit groups, [`KvCache::quantized_8bit`]). The one
    /// place the CLI's `--kv-bits` flags resolve.
    pub fn new_cache_bits(&self, max_len: usize, bits: u32) -> Result<KvCache> {
        let cache = self.new_cache(max_len);
        match bits {
            16 => Ok(cache),
            32 => Ok(cache.full_precision()),
            8 => cache.quantized_8bit(self.config.head_dim),
            b => Err(Error::Invalid(format!(
                "a KV cache stores 8, 16 or 32 bits per value, not {b}"
            ))),
        }
    }

    /// Every matrix a decode step multiplies with: the blocks' linear maps and the output matrix.
    fn matmul_weights(&self) -> impl Iterator<Item = &Weight> {
        self.blocks
            .iter()
            .flat_map(Block::weights)
            .chain(std::iter::once(&self.lm_head))
    }

    /// How many of the model's matrices (every linear map and the output matrix) are stored in
    /// each format, e.g. `{"Q4_0x8": 169}`: what the matmuls read.
    pub fn matmul_formats(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for w in self.matmul_weights() {
            *counts.entry(w.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// Bytes of weights read per decoded token.
    pub fn weight_bytes(&self) -> usize {
        self.matmul_weights().map(Weight::nbytes).sum()
    }

    /// Runs `tokens` (`(b, t)`, integer) through the model, appending to `cache`, and returns
    /// logits `(b, t, vocab)`, or only those of the last position `(b, 1, vocab)` when
    /// `last_only` (what generation needs: the output matrix is the largest in small models).
    pub fn forward(&self, tokens: &Array, cache: &mut KvCache, last_only: bool) -> Result<Array> {
        let cfg = &self.config;
        if tokens.ndim() != 2 {
            return Err(Error::Invalid(format!(
                "tokens must be (batch, time), got shape {:?}",
                tokens.shape()
            )));
        }
        let t = tokens.shape()[1];
        let offset = cache.offset();
        let mut x = self.embed.rows(tokens)?;
        if cfg.embed_scale {
            // Gemma rounds the scale to the activation dtype (bf16 in training): keep f32.
            x = ops::multiply(
                &x,
                &Array::scalar_of((cfg.hidden as f64).sqrt(), Dtype::F32),
            )?;
        }
        let context = cache.max_len();
        let (gc, gs) = self.rope_global.tables(offset, t, context)?;
        let (lc, ls) = if cfg.rope_local_base.is_some() {
            self.rope_local.tables(offset, t, context)?
        } else {
            (gc.clone(), gs.clone())
        };
        let mut masks = Masks {
            offset,
            t,
            window: cfg.sliding_window,
            made: Vec::new(),
        };
        for (i, blk) in self.blocks.iter().enumerate() {
            let rope = if blk.local {
                (&self.rope_local, &lc, &ls)
            } else {
                (&self.rope_global, &gc, &gs)
            };
            x = blk.forward(&x, cfg, rope, cache, i, &mut masks)?;
        }
        cache.advance(t);
        if last_only && t > 1 {
            x = ops::slice_axis(&x, 1, t - 1, t)?;
        }
        let x = rms_norm(&x, &self.norm, cfg.norm_eps)?;
        let mut logits = self.lm_head.apply(&x)?;
        if let Some(c) = cfg.final_logit_softcap {
            let c = Array::scalar_of(c, Dtype::F32);
            logits = ops::multiply(&ops::tanh(&ops::divide(&logits, &c)?)?, &c)?;
        }
        Ok(logits)
    }
}
