//! The `tessera` command-line tool.
//!
//! ```text
//! tessera demo                         a short tour of lazy arrays (the README's main command)
//! tessera bench ops|train [--json] [--quick] [--filter NAME]
//! tessera --version | --help
//! ```

mod args;
mod chat;
mod cluster;
mod generate;
mod info;
mod launch;
mod pipe;
mod quantize;

use std::process::ExitCode;
use tessera::core::ops::{self, Axes};
use tessera::{Array, Dtype, random};

const USAGE: &str = "usage:
  tessera demo                                    run a short demo of lazy arrays
  tessera generate --model PATH --prompt TEXT [--max-tokens N --temp T --top-k K --top-p P
                   --min-p P --repeat-penalty R --presence-penalty R --frequency-penalty R
                   --seed S --stop STR --logit-bias ID=BIAS --ctx N --kv-bits 8|16|32 --chat --system TEXT]
                                                  stream a completion (stats to stderr)
  tessera chat --model PATH [sampling flags] [--system TEXT]
                                                  interactive chat with the model's template
  tessera quantize IN.gguf|HF_DIR OUT_DIR [--bits 4] [--group-size 64]
                                                  MLX-style affine-quantized checkpoint directory
  tessera info MODEL.gguf|MODEL_DIR               architecture, parameters, tensor types, size
  tessera bench ops|train [--json] [--quick] [--filter NAME]
                                                  benchmark kernels or training steps (JSON lines with --json)
  tessera bench collectives [--json] [--max-bytes B] [--repeats R] [--op all_sum|all_gather]
                            [--breakdown]         collective bandwidth/latency (run under tessera launch);
                                                  --breakdown: small all_sums timed in segments
  tessera bench llm --model PATH [--prompt-tokens 512] [--gen-tokens 128] [--repeats 3]
                    [--depth N] [--kv-bits 8|16|32] [--json]
                                                  prompt and generation tokens/s (as llama-bench pp/tg)
  tessera launch -n N [--hosts a,b | --hostfile hosts.json] [--port P] [--backend ring|mpi]
                 [--timeout S] [--encrypt] [--bind core|none] -- PROGRAM ARGS...
                                                  run PROGRAM as N ranks of a cluster (output prefixed by rank)
  tessera cluster check (-n N [--hosts a,b] | --hostfile hosts.json) [--bytes B]
                                                  latency and bandwidth of every link, as a table
  tessera --version
  tessera --help";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code_command = match args.first().map(String::as_str) {
        Some("launch") => Some(launch::run as fn(&[String]) -> Result<i32, String>),
        Some("cluster") => Some(cluster::run as fn(&[String]) -> Result<i32, String>),
        _ => None,
    };
    if let Some(command) = code_command {
        // These leave with the exit code of the first rank that failed.
        return match command(&args[1..]) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let prints = match args.first().map(String::as_str) {
        Some("bench") => args.get(1).map(String::as_str) != Some("collectives"),
        Some("chat") => false,
        _ => true,
    };
    if prints {
        pipe::die_quietly_on_closed_stdout();
    }
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        Some("info") => info::run(&args[1..]),
        Some("generate") => generate::run(&args[1..]),
        Some("chat") => chat::run(&args[1..]),
        Some("quantize") => quantize::run(&args[1..]),
        Some("--version") | Some("-V") => {
            println!("tessera {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("--help") | Some("-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command '{other}'\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo() -> Result<(), String> {
    let run = || -> tessera::Result<()> {
        let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
        println!("a =\n{a}");
        let b = ops::softmax(&a, -1)?;
        println!("softmax(a, axis=-1) =\n{b}");
        let at = ops::transpose(&a, None)?;
        println!("a @ a.T =\n{}", ops::matmul(&a, &at)?);
        let k = random::key(0);
        let x = random::normal(&[1000, 1000], Dtype::F32, 0.0, 1.0, Some(&k))?;
        let m = ops::mean(&x, Axes::All, false)?;
        let s = ops::std(&x, Axes::All, false, 0)?;
        println!(
            "1M normal samples: mean {:.4}, std {:.4}",
            m.item::<f32>()?,
            s.item::<f32>()?
        );
        let t = std::time::Instant::now();
        let w = random::normal(&[1024, 1024], Dtype::F32, 0.0, 1.0, Some(&k))?;
        let y = ops::matmul(&w, &w)?;
        y.eval()?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "1024x1024 matmul (with sampling): {:.1} ms, {:.1} GFLOPS",
            secs * 1e3,
            2.0 * 1024f64.powi(3) / secs / 1e9
        );
        println!(
            "peak memory: {:.1} MiB",
            tessera::core::peak_memory() as f64 / (1 << 20) as f64
        );
        Ok(())
    };
    run().map_err(|e| e.to_string())
}

fn bench(args: &[String]) -> Result<(), String> {
    let suite = args
        .first()
        .map(String::as_str)
        .ok_or_else(|| format!("bench needs a suite name (ops, train, llm)\n{USAGE}"))?;
    if suite == "llm" {
        return bench_llm(&args[1..]);
    }
    if suite == "collectives" {
        return bench_collectives(&args[1..]);
    }
    let mut json = false;
    let mut quick = false;
    let mut filter: Option<String> = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--json" => json = true,
            "--quick" => quick = true,
            "--filter" => {
                i += 1;
                filter = Some(args.get(i).ok_or("--filter needs a value")?.clone());
            }
            other => return Err(format!("unknown bench flag '{other}'\n{USAGE}")),
        }
        i += 1;
    }
    let cases = match suite {
        "ops" => tessera_bench::ops_cases(),
        "train" => tessera_bench::train_cases(),
        other => {
            return Err(format!(
                "unknown bench suite '{other}' (available: ops, train)"
            ));
        }
    };
    let settings = if quick {
        tessera_bench::Settings::quick()
    } else {
        tessera_bench::Settings::normal()
    };
    let records = tessera_bench::run(cases, filter.as_deref(), settings, |r| {
        if json {
            println!("{}", r.to_json());
        } else {
            eprintln!("{:<28} {:>10.2} {}", r.case, r.value, r.unit);
        }
    });
    if records.is_empty() {
        return Err("no benchmark case matched the filter".into());
    }
    Ok(())
}

fn bench_collectives(args: &[String]) -> Result<(), String> {
    let flags = args::Flags::parse(
        args,
        &["--max-bytes", "--repeats", "--op"],
        &["--json", "--breakdown"],
    )?;
    let op = flags.get("--op").unwrap_or("all_sum");
    let b = tessera_bench::CollectiveBench {
        max_bytes: flags.num("--max-bytes", 256usize << 20)?,
        repeats: flags.num("--repeats", 20usize)?,
        op: tessera_bench::CollectiveKind::parse(op)
            .ok_or_else(|| format!("--op must be all_sum or all_gather, not {op:?}"))?,
        breakdown: flags.on("--breakdown"),
    };
    let g = tessera::distributed::init(tessera::distributed::Backend::Any)
        .map_err(|e| e.to_string())?;
    if g.size() == 1 {
        eprintln!(
            "note: a group of one rank; run under `tessera launch -n N -- tessera bench collectives`"
        );
    }
    let json = flags.on("--json");
    tessera_bench::run_collectives(&g, &b, &mut |r| {
        if json {
            println!("{}", r.to_json());
        } else {
            println!("{:<48} {:>10.2} {}", r.case, r.value, r.unit);
        }
    })
    .map_err(|e| e.to_string())
}

fn bench_llm(args: &[String]) -> Result<(), String> {
    let mut b = tessera_bench::LlmBench {
        model: String::new(),
        prompt_tokens: 512,
        gen_tokens: 128,
        repeats: 3,
        kv_bits: 16,
        depth: 0,
    };
    let mut json = false;
    let mut i = 0;
    let num = |i: usize, flag: &str| -> Result<usize, String> {
        args.get(i)
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .map_err(|_| format!("{flag} needs a whole number, got '{}'", args[i]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--model" | "-m" => {
                i += 1;
                b.model = args.get(i).ok_or("--model needs a path")?.clone();
            }
            "--prompt-tokens" | "-p" => {
                i += 1;
                b.prompt_tokens = num(i, "--prompt-tokens")?;
            }
            "--gen-tokens" | "-n" => {
                i += 1;
                b.gen_tokens = num(i, "--gen-tokens")?;
            }
            "--repeats" | "-r" => {
                i += 1;
                b.repeats = num(i, "--repeats")?.max(1);
            }
            "--depth" | "-d" => {
                i += 1;
                b.depth = num(i, "--depth")?;
            }
            "--kv-bits" => {
                i += 1;
                // The value itself is checked where the cache is made (8, 16 or 32).
                let v = num(i, "--kv-bits")?;
                b.kv_bits =
                    u32::try_from(v).map_err(|_| format!("--kv-bits {v} is out of range"))?;
            }
            "--json" => json = true,
            other => return Err(format!("unknown bench llm flag '{other}'\n{USAGE}")),
        }
        i += 1;
    }
    if b.model.is_empty() {
        return Err("bench llm needs --model PATH (a GGUF file or a checkpoint directory)".into());
    }
    tessera_bench::run_llm(&b, &mut |r| {
        if json {
            println!("{}", r.to_json());
        } else {
            println!("{:<20} {:>10.2} {}", r.case, r.value, r.unit);
        }
    })
}
