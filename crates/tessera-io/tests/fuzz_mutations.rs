//! Mutation fuzzing of every parser, run as an ordinary test: thousands of random corruptions of
//! real files (bytes flipped, length and count fields overwritten with extreme values, chunks
//! cut, duplicated or inserted, truncations), each parsed and, when the parse succeeds, every
//! tensor read. Any panic fails the test; an allocation the input asks for must be refused, not
//! attempted (the core's memory limit is lowered so an over-large tensor is an error).
//!
//! Deterministic (seeded), so a failure reproduces. The coverage-guided `cargo fuzz` targets in
//! `fuzz/` explore further on a nightly toolchain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use tessera_io::gguf::GgufFile;
use tessera_io::{npy, safetensors};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(p).unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break length and count fields.
const EXTREMES: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(7) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => {
                // An extreme little-endian integer (4 or 8 bytes) over a field.
                let v = EXTREMES[rng.below(EXTREMES.len())];
                let w = if rng.below(2) == 0 { 4 } else { 8 };
                for (k, byte) in v.to_le_bytes()[..w].iter().enumerate() {
                    if let Some(x) = b.get_mut(at + k) {
                        *x = *byte;
                    }
                }
            }
            3 => b.truncate(at),
            4 => {
                let end = (at + 1 + rng.below(64)).min(b.len());
                b.drain(at..end);
            }
            5 => {
                let end = (at + 1 + rng.below(64)).min(b.len());
                let chunk = b[at..end].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, chunk);
            }
            _ => {
                let n = 1 + rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, junk);
            }
        }
    }
    b
}

fn limit_memory() {
    // Any tensor the fuzzer makes look huge must fail as OutOfMemory, not take the machine.
    tessera_core::set_memory_limit(256 << 20);
}

#[test]
fn gguf_survives_random_mutations() {
    limit_memory();
    let base = fixture("small.gguf");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let b = mutate(&base, &mut rng);
        if let Ok(f) = GgufFile::from_bytes(b) {
            parsed += 1;
            for t in f.tensors.clone() {
                let _ = f.tensor(&t.name).map(|a| a.eval());
            }
            let _ = format!("{:?}", f.metadata);
        }
    }
    // Mutations that leave the parse intact exist (data bytes); the test must exercise both.
    assert!(parsed > 0 && parsed < 20_000, "{parsed} of 20000 parsed");
}

#[test]
fn safetensors_survives_random_mutations() {
    limit_memory();
    let base = fixture("small.safetensors");
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let b = mutate(&base, &mut rng);
        if let Ok(f) = safetensors::SafetensorsFile::from_bytes(b) {
            parsed += 1;
            for t in f.tensors.clone() {
                let _ = f.tensor(&t.name).map(|a| a.eval());
            }
        }
    }
    assert!(parsed > 0 && parsed < 20_000, "{parsed} of 20000 parsed");
}

#[test]
fn npy_survives_random_mutations() {
    limit_memory();
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for name in [
        "f32_c.npy",
        "f64_fortran.npy",
        "i32_be.npy",
        "bool_scalar.npy",
    ] {
        let base = fixture(name);
        let mut parsed = 0;
        for _ in 0..5000 {
            let b = mutate(&base, &mut rng);
            if let Ok(a) = npy::from_bytes(&b) {
                parsed += 1;
                let _ = a.eval();
            }
        }
        assert!(parsed < 5000, "{name}: every mutation parsed");
    }
}

#[test]
fn npz_survives_random_mutations() {
    limit_memory();
    let dir = std::env::temp_dir().join(format!("tessera-npz-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(0xfeed_face_dead_beef);
    for name in ["pair.npz", "pair_compressed.npz"] {
        let base = fixture(name);
        let path = dir.join(name);
        let mut parsed = 0;
        for _ in 0..2000 {
            std::fs::write(&path, mutate(&base, &mut rng)).unwrap();
            if let Ok(arrays) = npy::load_npz(&path) {
                parsed += 1;
                for a in arrays.values() {
                    let _ = a.eval();
                }
            }
        }
        assert!(parsed < 2000, "{name}: every mutation parsed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
