//! `tessera generate` and the pieces `tessera chat` shares with it: loading with a progress
//! line, sampling flags, streaming output with stop strings, and the closing statistics.

use crate::args::Flags;
use std::io::{IsTerminal, Write};
use tessera::lm::generate::{GenerateOptions, GenerationStats, Generator};
use tessera::lm::load::LoadedModel;
use tessera::lm::sample::SamplerConfig;
use tessera::lm::stop::StopMatcher;

pub const SAMPLING_FLAGS: &[&str] = &[
    "--max-tokens",
    "--temp",
    "--top-k",
    "--top-p",
    "--min-p",
    "--repeat-penalty",
    "--presence-penalty",
    "--frequency-penalty",
    "--repeat-last-n",
    "--seed",
    "--stop",
    "--logit-bias",
    "--ctx",
    "--kv-bits",
];

/// A generator with the cache the flags ask for: `--kv-bits 16` (the default) stores keys and
/// values in f16, `32` in f32, `8` global layers in 8 bits.
pub fn generator<'m>(f: &Flags, m: &'m LoadedModel, ctx: usize) -> Result<Generator<'m>, String> {
    let bits = f.num("--kv-bits", 16u32)?;
    let cache = m
        .model
        .new_cache_bits(ctx, bits)
        .map_err(|e| format!("--kv-bits {bits}: {e}"))?;
    Ok(Generator::with_cache(&m.model, cache))
}

/// Loads a model, drawing a progress bar on stderr.
pub fn load_model(path: &str) -> Result<LoadedModel, String> {
    let tty = std::io::stderr().is_terminal();
    let t = std::time::Instant::now();
    let mut last = usize::MAX;
    let m = tessera::lm::load::load(path, &mut |done, total| {
        let pct = done * 100 / total.max(1);
        if tty && pct != last {
            last = pct;
            let bar = "#".repeat(pct / 4);
            eprint!("\rloading {path} [{bar:<25}] {pct:>3}%");
        }
    })
    .map_err(|e| e.to_string())?;
    if tty {
        eprint!("\r\x1b[K");
    }
    eprintln!(
        "loaded {} ({} layers, {:.0} MB of weights) in {:.2} s",
        m.name,
        m.model.config.layers,
        m.model.weight_bytes() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// Generation options from the sampling flags.
pub fn options(f: &Flags, m: &LoadedModel) -> Result<(GenerateOptions, Vec<String>), String> {
    let mut s = SamplerConfig {
        temperature: f.num("--temp", 0.0f32)?,
        top_k: f.num("--top-k", 0usize)?,
        top_p: f.num("--top-p", 1.0f32)?,
        min_p: f.num("--min-p", 0.0f32)?,
        repetition_penalty: f.num("--repeat-penalty", 1.0f32)?,
        presence_penalty: f.num("--presence-penalty", 0.0f32)?,
        frequency_penalty: f.num("--frequency-penalty", 0.0f32)?,
        penalty_last_n: f.num("--repeat-last-n", 64usize)?,
        seed: f.num("--seed", 0u64)?,
        logit_bias: Vec::new(),
    };
    for b in f.all("--logit-bias") {
        let (id, bias) = b
            .split_once('=')
            .ok_or_else(|| format!("--logit-bias wants ID=BIAS (e.g. 42=-inf), got '{b}'"))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| format!("--logit-bias: bad token id '{id}'"))?;
        let bias: f32 = bias
            .trim()
            .parse()
            .map_err(|_| format!("--logit-bias: bad bias '{bias}'"))?;
        if id as usize >= m.tokenizer.vocab_size() {
            return Err(format!(
                "--logit-bias: token {id} is outside the vocabulary"
            ));
        }
        s.logit_bias.push((id, bias));
    }
    s.validate().map_err(|e| e.to_string())?;
    let opts = GenerateOptions {
        max_tokens: f.num("--max-tokens", 256usize)?,
        sampler: s,
        stop_ids: m.tokenizer.stop_ids().to_vec(),
        prefill_chunk: 512,
    };
    Ok((opts, f.all("--stop")))
}

/// Generates after `prompt`, streaming text to stdout; returns the generated text and stats.
pub fn stream(
    g: &mut Generator,
    m: &LoadedModel,
    prompt: &[u32],
    opts: &GenerateOptions,
    stops: &[String],
) -> Result<(String, GenerationStats), String> {
    let mut dec = m.tokenizer.stream_decoder(true);
    let mut matcher = StopMatcher::new(stops);
    let mut text = String::new();
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let (_, mut stats) = g
        .generate(prompt, opts, &mut |tok| {
            let piece = match dec.push(tok) {
                Ok(p) => p,
                Err(e) => {
                    failed = Some(e.to_string());
                    return false;
                }
            };
            let (show, stop) = matcher.push(&piece);
            text.push_str(&show);
            let _ = out.write_all(show.as_bytes());
            let _ = out.flush();
            !stop
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = failed {
        return Err(e);
    }
    let (rest, _) = matcher.push(&dec.flush());
    let rest = rest + &matcher.flush();
    text.push_str(&rest);
    let _ = out.write_all(rest.as_bytes());
    let _ = out.flush();
    if stats.finish == tessera::lm::generate::FinishReason::Callback && !stops.is_empty() {
        stats.finish = tessera::lm::generate::FinishReason::Stop;
    }
    Ok((text, stats))
}

pub fn report(stats: &GenerationStats, m: &LoadedModel) {
    eprintln!(
        "\nprompt: {} tokens ({} reused), {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s | peak memory {:.1} MB + {:.0} MB of memory-mapped weights | stop: {:?}",
        stats.prompt_tokens,
        stats.reused_tokens,
        stats.prefill_tps(),
        stats.generated_tokens,
        stats.decode_tps(),
        tessera::core::peak_memory() as f64 / 1e6,
        m.model.weight_bytes() as f64 / 1e6,
        stats.finish
    );
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut value_flags = vec!["--model", "-m", "--prompt", "-p", "--system"];
    value_flags.extend_from_slice(SAMPLING_FLAGS);
    let f = Flags::parse(args, &value_flags, &["--chat", "--no-special"])?;
    let path = f
        .get("--model")
        .or_else(|| f.get("-m"))
        .ok_or("--model PATH is required")?;
    let prompt = f
        .get("--prompt")
        .or_else(|| f.get("-p"))
        .ok_or("--prompt TEXT is required")?;
    let m = load_model(path)?;
    let (opts, stops) = options(&f, &m)?;
    let ids = if f.on("--chat") {
        crate::chat::encode_conversation(&m, f.get("--system"), &[("user".into(), prompt.into())])?
    } else {
        m.tokenizer.encode(prompt, !f.on("--no-special"), false)
    };
    let ctx = f.num("--ctx", (ids.len() + opts.max_tokens).max(512))?;
    let mut g = generator(&f, &m, ctx)?;
    if !f.on("--chat") {
        print!("{prompt}");
    }
    let (_, stats) = stream(&mut g, &m, &ids, &opts, &stops)?;
    println!();
    report(&stats, &m);
    Ok(())
}
