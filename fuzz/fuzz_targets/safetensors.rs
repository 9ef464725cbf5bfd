//! Any bytes: safetensors parsing and reading every tensor must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera_core::set_memory_limit(256 << 20);
    if let Ok(f) = tessera_io::safetensors::SafetensorsFile::from_bytes(data.to_vec()) {
        for t in f.tensors.clone() {
            let _ = f.tensor(&t.name).map(|a| a.eval());
        }
    }
});
