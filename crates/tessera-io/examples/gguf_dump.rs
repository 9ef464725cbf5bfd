//! Prints a GGUF file's metadata (long arrays abbreviated) and tensor table.
//! `cargo run -p tessera-io --example gguf_dump -- model.gguf`
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: gguf_dump FILE.gguf");
        std::process::exit(2);
    };
    let f = match tessera_io::gguf::GgufFile::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("GGUF v{} alignment {}", f.version, f.alignment);
    for (k, v) in f.metadata.iter() {
        match v.as_array() {
            Some(a) if a.len() > 8 => println!("{k} = [{} items: {:?} ...]", a.len(), &a[..4]),
            _ => println!("{k} = {v:?}"),
        }
    }
    for t in &f.tensors {
        println!("{:40} {:>6} {:?}", t.name, t.ggml_type.name(), t.shape);
    }
}
