//! Any bytes: .npy parsing must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera_core::set_memory_limit(256 << 20);
    if let Ok(a) = tessera_io::npy::from_bytes(data) {
        let _ = a.eval();
    }
});
