//! Prints the token ids of texts as JSON: `tokenize MODEL.gguf TEXT...` (BOS added as the model
//! wants). Used to write the prompts of scripts/gen-lm-reference.py.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((path, texts)) = args.split_first() else {
        eprintln!("usage: tokenize MODEL.gguf TEXT...");
        std::process::exit(2);
    };
    let f = tessera_io::gguf::GgufFile::open(path)?;
    let tok = tessera_lm::tokenizer::Tokenizer::from_gguf(&f)?;
    let mut out = serde_json::Map::new();
    for t in texts {
        out.insert(t.clone(), serde_json::to_value(tok.encode(t, true, false))?);
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
