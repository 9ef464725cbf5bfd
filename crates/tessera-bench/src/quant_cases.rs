//! Quantized GEMV (`x @ Wᵀ` with one activation row and GGUF-block weights): the kernel behind
//! LLM decoding. Two flavours per weight type:
//! - `qgemv_<type>_4864x<k>`: 64 different 4864xk matrices (an MLP projection of a 0.5B
//!   model; k = 896, or 1024 for the K-quants, whose rows are whole 256-value blocks) evaluated together, so the weights stream from memory as in decoding (their total
//!   size is several times the last-level cache). GB/s of weight bytes read.
//! - `qgemv_affine4_g64_4864x896`: the same streaming product for MLX-style affine 4-bit
//!   weights (group size 64, f16 scales and biases), as `ops::quantized_matmul` runs it.
//! - `qgemv_<q4>_<n>x<k>_model`: the decode products of a 0.5B-shape model in its CPU layout,
//!   and `qgemv_<q4>_9728x896_gated_model`, its gate/up product with the activation applied
//!   (`ops::gguf_gated_matmul`).
//! - `qgemv_<type>_1024x<k>_hot`: one small matrix, multiplied 32 times per evaluation, that
//!   stays in the cores' L2, which shows
//!   what the kernel's arithmetic allows when memory is not the limit.

use crate::{Body, Case};
use tessera_core::quant::GgmlType;
use tessera_core::{Array, Dtype, GateActivation, ops, random};

/// `n` rows of `k` values of `ty`, in valid blocks: random bytes, with every f16 scale field
/// set to a small finite value (random bytes there could be NaN or infinite). An in-memory
/// layout (Q4_0x8 and the other `x8` layouts) is made from its file format.
fn weights(ty: GgmlType, n: usize, k: usize, seed: u64) -> Array {
    if ty != ty.file_format() {
        let natural = weights(ty.file_format(), n, k, seed);
        return match tessera_core::quant::interleave_for_cpu(&natural, ty.file_format()) {
            Ok(Some((w, t))) if t == ty => w,
            Ok(_) => panic!("bench setup: this CPU does not use {ty}"),
            Err(e) => panic!("bench setup: {e}"),
        };
    }
    let row = ty
        .row_bytes(k)
        .unwrap_or_else(|e| panic!("bench setup failed: {e}"));
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes: Vec<u8> = (0..n * row)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    // Offsets of the f16 fields inside one block.
    let f16_fields: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => panic!("no bench weights for {ty}"),
    };
    let scale = 0x2000u16.to_le_bytes(); // 2^-7
    for blk in bytes.chunks_exact_mut(ty.type_size()) {
        for &at in f16_fields {
            blk[at..at + 2].copy_from_slice(&scale);
        }
    }
    let a = Array::from_vec(bytes, &[n, row]).unwrap_or_else(|e| panic!("bench setup: {e}"));
    a.eval().unwrap_or_else(|e| panic!("bench setup: {e}"));
    a
}

fn activation(k: usize) -> Array {
    let key = random::key(42);
    let x = random::uniform(-1.0, 1.0, &[1, k], Dtype::F32, Some(&key))
        .unwrap_or_else(|e| panic!("bench setup: {e}"));
    x.eval().unwrap_or_else(|e| panic!("bench setup: {e}"));
    x
}

/// `copies` different matrices, each multiplied `reps` times per run (all in one evaluation).
fn qgemv_case(ty: GgmlType, n: usize, k: usize, copies: usize, reps: usize, suffix: &str) -> Case {
    product_case(ty, n, k, copies, reps, suffix, None)
}

/// [`qgemv_case`], or with `gate` the gated product (`ops::gguf_gated_matmul`, the matrix read
/// as gate and up rows alternating 8 at a time).
fn product_case(
    ty: GgmlType,
    n: usize,
    k: usize,
    copies: usize,
    reps: usize,
    suffix: &str,
    gate: Option<GateActivation>,
) -> Case {
    Case {
        name: format!("qgemv_{}_{n}x{k}{suffix}", ty.name().to_lowercase()),
        unit: "GB/s",
        setup: Box::new(move || {
            let ws: Vec<Array> = (0..copies)
                .map(|i| weights(ty, n, k, i as u64 + 1))
                .collect();
            let x = activation(k);
            let bytes = (reps * copies * n * ty.row_bytes(k).unwrap_or(0)) as f64;
            Body::timed(
                move || {
                    let outs: Vec<Array> = (0..reps)
                        .flat_map(|_| ws.iter())
                        .map(|w| match gate {
                            Some(act) => ops::gguf_gated_matmul(&x, w, ty, act),
                            None => ops::gguf_matmul(&x, w, ty),
                        })
                        .collect::<tessera_core::Result<_>>()
                        .unwrap_or_else(|e| panic!("bench case failed: {e}"));
                    tessera_core::eval(&outs).unwrap_or_else(|e| panic!("bench case failed: {e}"));
                },
                bytes,
            )
        }),
    }
}

/// MLX-style affine 4-bit weights (group size 64, f16 scales and biases as the MLX community's
/// files store them): `copies` different `n x k` matrices, each multiplied once per run. GB/s
/// of packed values, scales and biases read.
fn affine_qgemv_case(n: usize, k: usize, copies: usize) -> Case {
    Case {
        name: format!("qgemv_affine4_g64_{n}x{k}"),
        unit: "GB/s",
        setup: Box::new(move || {
            let (gs, bits) = (64, 4);
            let ws: Vec<(Array, Array, Array)> = (0..copies)
                .map(|i| {
                    let key = random::key(100 + i as u64);
                    let w = random::normal(&[n, k], Dtype::F32, 0.0, 0.02, Some(&key))
                        .and_then(|w| ops::astype(&w, Dtype::F16))
                        .and_then(|w| ops::quantize(&w, gs, bits))
                        .unwrap_or_else(|e| panic!("bench setup: {e}"));
                    tessera_core::eval(&[w.0.clone(), w.1.clone(), w.2.clone()])
                        .unwrap_or_else(|e| panic!("bench setup: {e}"));
                    w
                })
                .collect();
            // f32 activations, as `tessera-lm` multiplies them.
            let x = activation(k);
            let per: usize = ws[0].0.nbytes() + ws[0].1.nbytes() + ws[0].2.nbytes();
            Body::timed(
                move || {
                    let outs: Vec<Array> = ws
                        .iter()
                        .map(|(q, s, b)| ops::quantized_matmul(&x, q, s, b, true, gs, bits))
                        .collect::<tessera_core::Result<_>>()
                        .unwrap_or_else(|e| panic!("bench case failed: {e}"));
                    tessera_core::eval(&outs).unwrap_or_else(|e| panic!("bench case failed: {e}"));
                },
                (copies * per) as f64,
            )
        }),
    }
}

pub fn quant_cases() -> Vec<Case> {
    // The K-quants need rows that are whole 256-value blocks: 1024 instead of 896.
    let mut types = vec![
        (GgmlType::Q4_0, 896),
        (GgmlType::Q8_0, 896),
        (GgmlType::Q4_K, 1024),
        (GgmlType::Q6_K, 1024),
        (GgmlType::Q4_1, 896),
    ];
    // The interleaved layouts that models load into where the CPU kernels prefer them.
    if tessera_core::quant::cpu_layout(GgmlType::Q4_0) == GgmlType::Q4_0x8 {
        types.insert(1, (GgmlType::Q4_0x8, 896));
        types.push((GgmlType::Q4_1x8, 896));
        types.push((GgmlType::Q8_0x8, 896));
        types.push((GgmlType::Q5_0, 896));
        types.push((GgmlType::Q5_0x8, 896));
        types.push((GgmlType::Q4_Kx8, 1024));
        types.push((GgmlType::Q6_Kx8, 1024));
        types.push((GgmlType::Q5_K, 1024));
        types.push((GgmlType::Q5_Kx8, 1024));
    }
    let mut v: Vec<Case> = types
        .iter()
        .map(|&(ty, k)| qgemv_case(ty, 4864, k, 64, 1, ""))
        .collect();
    v.extend(
        types
            .iter()
            .map(|&(ty, k)| qgemv_case(ty, 1024, k, 1, 32, "_hot")),
    );
    // The decode matmuls of a Qwen2.5-0.5B-shaped model in the layout it loads into, each of
    // 64 different matrices read once (as a decode step reads them): q/k/v stacked, o, down,
    // gate/up stacked. Small matrices show the fixed cost per call next to the streaming rate.
    let q4 = types[1].0;
    for (n, k) in [(1152, 896), (896, 896), (896, 4864), (9728, 896)] {
        v.push(qgemv_case(q4, n, k, 64, 1, "_model"));
    }
    // gate/up as the model runs it: one gated product (the SiLU applied per thread).
    v.push(product_case(
        q4,
        9728,
        896,
        64,
        1,
        "_gated_model",
        Some(GateActivation::Silu),
    ));
    v.push(affine_qgemv_case(4864, 896, 64));
    // Long rows (a down projection): no partial group at the end of a row.
    v.extend(
        types
            .iter()
            .map(|&(ty, _)| qgemv_case(ty, 192, 4864, 1, 32, "_hot")),
    );
    v
}
