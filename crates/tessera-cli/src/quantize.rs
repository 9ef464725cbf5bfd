//! `tessera quantize IN OUT_DIR --bits B --group-size G`: an MLX-style affine-quantized
//! checkpoint directory from a GGUF model or a Hugging Face directory (see `tessera_lm::convert`).

use crate::args::Flags;
use std::io::IsTerminal;

pub fn run(args: &[String]) -> Result<(), String> {
    let f = Flags::parse_with_positionals(args, &["--bits", "--group-size"], &[])?;
    let usage = "usage: tessera quantize IN.gguf|HF_DIR OUT_DIR [--bits 4] [--group-size 64]";
    let [input, output] = f.positionals() else {
        return Err(usage.into());
    };
    let bits = f.num("--bits", 4u32)?;
    let group = f.num("--group-size", 64usize)?;
    let out = std::path::Path::new(output.as_str());
    if out.join("model.safetensors").exists() {
        return Err(format!(
            "{} already holds a model; choose another directory (nothing was overwritten)",
            out.display()
        ));
    }
    let tty = std::io::stderr().is_terminal();
    let t = std::time::Instant::now();
    tessera::lm::convert::quantize(
        std::path::Path::new(input.as_str()),
        out,
        group,
        bits,
        &mut |done, total, name| {
            let pct = done * 100 / total.max(1);
            if tty {
                eprint!(
                    "\r\x1b[Kquantizing [{:<25}] {pct:>3}% {name}",
                    "#".repeat(pct / 4)
                );
            } else if done % 50 == 0 || done == total {
                eprintln!("quantizing {done}/{total} {name}");
            }
        },
    )
    .map_err(|e| e.to_string())?;
    if tty {
        eprint!("\r\x1b[K");
    }
    eprintln!(
        "wrote {} ({bits}-bit, groups of {group}) in {:.1} s; run it with: tessera generate --model {}",
        out.display(),
        t.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
