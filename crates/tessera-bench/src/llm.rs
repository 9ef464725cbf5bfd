//! `tessera bench llm`: prompt processing and generation speed of a model (a GGUF file or a
//! checkpoint directory), measured the way llama.cpp's `llama-bench` does (pp: a prompt of N
//! tokens into an empty context; tg: N tokens generated one at a time), so the two can be
//! compared on the same file.

use crate::Record;
use std::time::Instant;
use tessera_core::Array;

/// What to measure.
pub struct LlmBench {
    pub model: String,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Runs of each measurement; the median is reported.
    pub repeats: usize,
    /// The KV cache storage: 16 (f16, the default), 32 (f32) or 8 (`Model::new_cache_bits`).
    pub kv_bits: u32,
    /// Positions already in the cache when the decode measurement starts (prefilled, not
    /// timed), as llama-bench's `-d`: decode speed at a long context.
    pub depth: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The machine's read bandwidth now, in GB/s: the best of 5 sums over 256 MB of f32 (the
/// roofline a decode step's weight streaming is measured against, taken in the same run because
/// on a shared machine it moves by 2x over a day).
fn read_bandwidth() -> Result<f64, String> {
    use tessera_core::{Dtype, ops, random};
    let n = 64usize << 20;
    let key = random::key(11);
    let a = random::uniform(0.0, 1.0, &[n], Dtype::F32, Some(&key)).map_err(|e| e.to_string())?;
    a.eval().map_err(|e| e.to_string())?;
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        ops::sum(&a, None, false)
            .and_then(|s| s.eval())
            .map_err(|e| e.to_string())?;
        best = best.max((4 * n) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

/// Runs the benchmark; `emit` receives `prefill_tps`, `decode_tps`, `decode_weight_gbps`, and
/// with a decode measurement `read_bw_gbps` and `decode_pct_of_read_bw` (the roofline).
pub fn run_llm(b: &LlmBench, emit: &mut dyn FnMut(Record)) -> Result<(), String> {
    // A GGUF file or a checkpoint directory (safetensors, dense or MLX-quantized).
    let model = tessera_lm::load::load(&b.model, &mut |_, _| {})
        .map_err(|e| e.to_string())?
        .model;
    let vocab = model.config.vocab_size;
    // Deterministic ordinary-looking token ids (skipping the first ids, often special tokens).
    let ids: Vec<i32> = (0..b.prompt_tokens.max(b.depth).max(1))
        .map(|i| (1000 + (i * 7919) % (vocab.saturating_sub(1000)).max(1)) as i32 % vocab as i32)
        .collect();
    let ctx = b.prompt_tokens.max(b.depth) + b.gen_tokens + 8;
    let limit = model.config.context_length;
    if b.prompt_tokens.max(b.depth + b.gen_tokens) > limit {
        return Err(format!(
            "the model's context holds {limit} positions: --prompt-tokens {} or --depth {} + \
             --gen-tokens {} do not fit; ask for fewer",
            b.prompt_tokens, b.depth, b.gen_tokens
        ));
    }
    let new_cache = || {
        model
            .new_cache_bits(ctx, b.kv_bits)
            .map_err(|e| format!("--kv-bits {}: {e}", b.kv_bits))
    };
    let fwd = |cache: &mut tessera_lm::kv_cache::KvCache, toks: &[i32]| -> Result<(), String> {
        let a = Array::from_vec(toks.to_vec(), &[1, toks.len()]).map_err(|e| e.to_string())?;
        let logits = model.forward(&a, cache, true).map_err(|e| e.to_string())?;
        logits.eval().map_err(|e| e.to_string())
    };
    // Warm-up: touches the weights (page cache) and the allocator.
    let mut cache = new_cache()?;
    fwd(&mut cache, &ids[..ids.len().min(64)])?;
    // TESSERA_PROFILE=1: time the measured runs only.
    tessera_core::profile::reset();
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for _ in 0..b.repeats.max(1) {
        if b.prompt_tokens > 0 {
            let mut cache = new_cache()?;
            let t = Instant::now();
            // As generation's prefill does (`Generator::prefill`).
            cache.reserve(b.prompt_tokens);
            for chunk in ids[..b.prompt_tokens].chunks(512) {
                fwd(&mut cache, chunk)?;
            }
            pp.push(b.prompt_tokens as f64 / t.elapsed().as_secs_f64());
        }
        if b.gen_tokens > 0 {
            let mut cache = new_cache()?;
            cache.reserve(b.depth);
            for chunk in ids[..b.depth].chunks(512) {
                fwd(&mut cache, chunk)?;
            }
            let mut tok = ids[0];
            let t = Instant::now();
            for _ in 0..b.gen_tokens {
                let a = Array::from_vec(vec![tok], &[1, 1]).map_err(|e| e.to_string())?;
                let logits = model
                    .forward(&a, &mut cache, true)
                    .map_err(|e| e.to_string())?;
                let v = logits.to_vec::<f32>().map_err(|e| e.to_string())?;
                tok = (tessera_lm::sample::argmax(&v) as usize % vocab) as i32;
            }
            tg.push(b.gen_tokens as f64 / t.elapsed().as_secs_f64());
        }
    }
    if tessera_core::profile::enabled() {
        eprintln!(
            "time per primitive over the measured runs (TESSERA_PROFILE):\n{}",
            tessera_core::profile::report()
        );
    }
    if !pp.is_empty() {
        emit(Record {
            case: "prefill_tps".into(),
            value: median(pp),
            unit: "tok/s",
        });
    }
    if !tg.is_empty() {
        let tps = median(tg);
        emit(Record {
            case: "decode_tps".into(),
            value: tps,
            unit: "tok/s",
        });
        let gbps = tps * model.weight_bytes() as f64 / 1e9;
        emit(Record {
            case: "decode_weight_gbps".into(),
            value: gbps,
            unit: "GB/s",
        });
        let bw = read_bandwidth()?;
        emit(Record {
            case: "read_bw_gbps".into(),
            value: bw,
            unit: "GB/s",
        });
        emit(Record {
            case: "decode_pct_of_read_bw".into(),
            value: 100.0 * gbps / bw,
            unit: "%",
        });
    }
    Ok(())
}
