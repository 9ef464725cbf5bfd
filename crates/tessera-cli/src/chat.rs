//! `tessera chat`: an interactive conversation with the model's chat template. Each turn
//! re-renders the whole history; the generator reuses the KV cache of the common prefix, so
//! only the new turn is computed.

use crate::args::Flags;
use crate::generate::{SAMPLING_FLAGS, load_model, options, report, stream};
use std::io::{BufRead, Write};
use tessera::lm::chat_template::{ChatTemplate, Message};
use tessera::lm::load::LoadedModel;

/// The model's template, or a built-in one for its family when the file has none.
fn template(m: &LoadedModel) -> Result<ChatTemplate, String> {
    match &m.chat_template {
        Some(src) => ChatTemplate::new(src).map_err(|e| format!("the model's chat template: {e}")),
        None => {
            let name =
                tessera::lm::chat_template::builtin_for_architecture(m.model.config.arch.name());
            ChatTemplate::builtin(name).map_err(|e| e.to_string())
        }
    }
}

/// Renders a conversation (plus an optional system prompt) ready for the assistant's reply and
/// tokenizes it (special tokens in the rendered text are parsed).
pub fn encode_conversation(
    m: &LoadedModel,
    system: Option<&str>,
    turns: &[(String, String)],
) -> Result<Vec<u32>, String> {
    let t = template(m)?;
    let mut msgs = Vec::new();
    if let Some(s) = system {
        msgs.push(Message::new("system", s));
    }
    for (role, content) in turns {
        msgs.push(Message::new(role, content));
    }
    let tok = &m.tokenizer;
    let name = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
    let extra = serde_json::json!({
        "bos_token": name(tok.bos_id()),
        "eos_token": name(tok.eos_id()),
    });
    let text = t.render(&msgs, true, &extra).map_err(|e| e.to_string())?;
    // Templates write the BOS token themselves when the model wants one.
    Ok(tok.encode(&text, false, true))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut value_flags = vec!["--model", "-m", "--system"];
    value_flags.extend_from_slice(SAMPLING_FLAGS);
    let f = Flags::parse(args, &value_flags, &[])?;
    let path = f
        .get("--model")
        .or_else(|| f.get("-m"))
        .ok_or("--model PATH is required")?;
    let m = load_model(path)?;
    let (opts, stops) = options(&f, &m)?;
    let ctx = f.num("--ctx", 4096usize)?;
    let mut g = crate::generate::generator(&f, &m, ctx)?;
    let mut turns: Vec<(String, String)> = Vec::new();
    eprintln!(
        "chatting with {} (Ctrl-D to quit, /reset to clear the history)",
        m.name
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?
            == 0
        {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if line.trim() == "/reset" {
            turns.clear();
            g.reset();
            continue;
        }
        turns.push(("user".into(), line.to_string()));
        let ids = encode_conversation(&m, f.get("--system"), &turns)?;
        if ids.len() + opts.max_tokens > ctx {
            turns.pop();
            eprintln!(
                "the conversation would exceed the context of {ctx} tokens; /reset or raise --ctx"
            );
            continue;
        }
        let (reply, stats) = stream(&mut g, &m, &ids, &opts, &stops)?;
        println!();
        report(&stats, &m);
        turns.push(("assistant".into(), reply.trim().to_string()));
    }
}
