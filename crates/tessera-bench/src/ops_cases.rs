//! `tessera bench ops`: kernels and per-op overhead.

use crate::{Body, Case};
use tessera_core::ops::{self, Axes};
use tessera_core::{Array, Dtype, memory, random};

fn rand(shape: &[usize], dtype: Dtype, seed: u64) -> Array {
    let k = random::key(seed);
    let a = random::uniform(-1.0, 1.0, shape, Dtype::F32, Some(&k)).and_then(|a| a.astype(dtype));
    let a = a.unwrap_or_else(|e| panic!("bench setup failed: {e}"));
    a.eval()
        .unwrap_or_else(|e| panic!("bench setup failed: {e}"));
    a
}

/// Benchmarks run fixed, valid inputs: a failure is a bug worth stopping for.
fn ok<T>(r: tessera_core::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("bench case failed: {e}"))
}

/// Decode attention (`ops::sdpa`, one query row) of `heads` query heads over `kv_heads` heads
/// of 64, against the first `l` keys of a 4096-slot cache stored as `dtype` and read in place
/// (µs per call). Named `sdpa_decode_{heads}x{kv_heads}x64[_f16]_l{l}`; `dtype` is f32 or
/// f16 (the two cache types).
fn sdpa_decode_case(heads: usize, kv_heads: usize, l: usize, dtype: Dtype) -> Case {
    let suffix = match dtype {
        Dtype::F32 => "",
        Dtype::F16 => "_f16",
        other => panic!("bench setup: no {other} KV cache"),
    };
    Case {
        name: format!("sdpa_decode_{heads}x{kv_heads}x64{suffix}_l{l}"),
        unit: "us/op",
        setup: Box::new(move || {
            let q = rand(&[1, heads, 1, 64], Dtype::F32, 12);
            let cache = |seed| {
                let c = ok(ops::astype(
                    &rand(&[1, kv_heads, 4096, 64], Dtype::F32, seed),
                    dtype,
                ));
                ok(c.eval());
                ok(ops::slice_axis(&c, 2, 0, l))
            };
            let (k, v) = (cache(13), cache(14));
            Body::timed(move || eval_or_die(ops::sdpa(&q, &k, &v, 0.125, None)), 1.0)
        }),
    }
}

/// Decode attention as a model meets it: each call reads a different layer's f16 cache, so the
/// keys and values come from memory rather than the caches (`layers` caches of `(1, kv_heads,
/// l, 64)` are cycled; in a model the weights stream through the caches between two calls of
/// one layer). The caches are cut from an arena, in huge pages, as `KvCache` cuts them.
/// Named `sdpa_decode_{heads}x{kv_heads}x64_f16_l{l}_cold`.
fn sdpa_decode_cold_case(heads: usize, kv_heads: usize, l: usize, layers: usize) -> Case {
    Case {
        name: format!("sdpa_decode_{heads}x{kv_heads}x64_f16_l{l}_cold"),
        unit: "us/op",
        setup: Box::new(move || {
            let q = rand(&[1, heads, 1, 64], Dtype::F32, 12);
            let arena = memory::Arena::with_block_bytes(8 << 20);
            let shape = [1, kv_heads, l, 64];
            let cache = |seed| {
                let values = rand(&shape, Dtype::F16, seed);
                // Written in place into the arena piece (its only owner is the update).
                let c = ok(ops::slice_update(
                    &ok(memory::zeros_in(&shape, Dtype::F16, &arena)),
                    &values,
                    &[0, 0, 0, 0],
                    &[1, kv_heads as isize, l as isize, 64],
                    &[1, 1, 1, 1],
                ));
                ok(c.eval());
                c
            };
            let caches: Vec<(Array, Array)> = (0..layers as u64)
                .map(|i| (cache(100 + 2 * i), cache(101 + 2 * i)))
                .collect();
            let mut next = 0;
            Body::timed(
                move || {
                    let (k, v) = &caches[next];
                    next = (next + 1) % caches.len();
                    eval_or_die(ops::sdpa(&q, k, v, 0.125, None))
                },
                1.0,
            )
        }),
    }
}

/// Prompt attention as a model runs a chunk of its prefill: `t` queries of `heads` heads over
/// `kv_heads` heads of `d`, causal (and within the last `window` positions when given), at the
/// last `t` of `l` positions of an f16 cache, through the fused kernel (`ops::sdpa`) or the
/// matmul formulation (`ops::sdpa_composite`). GFLOP/s of the visible work (4 d flops per
/// query head and visible key), so both count the same. Named
/// `sdpa_prefill_{heads}x{kv_heads}x{d}_f16_t{t}_l{l}[_w{window}]_{fused|composite}`.
fn sdpa_prefill_case(
    (heads, kv_heads, d): (usize, usize, usize),
    t: usize,
    l: usize,
    window: Option<usize>,
    fused: bool,
) -> Case {
    let how = if fused { "fused" } else { "composite" };
    let w = window.map_or(String::new(), |w| format!("_w{w}"));
    Case {
        name: format!("sdpa_prefill_{heads}x{kv_heads}x{d}_f16_t{t}_l{l}{w}_{how}"),
        unit: "GFLOPS",
        setup: Box::new(move || {
            let q = rand(&[1, heads, t, d], Dtype::F32, 15);
            let cache = |seed| {
                let c = ok(ops::astype(
                    &rand(&[1, kv_heads, l, d], Dtype::F32, seed),
                    Dtype::F16,
                ));
                ok(c.eval());
                c
            };
            let (k, v) = (cache(16), cache(17));
            // Query i sits at position l - t + i and sees keys j <= that (and j + window > it).
            let visible = |i: usize, j: usize| {
                let pos = l - t + i;
                j <= pos && window.is_none_or(|w| j + w > pos)
            };
            let mask: Vec<f32> = (0..t * l)
                .map(|x| {
                    if visible(x / l, x % l) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let seen = (0..t * l).filter(|&x| visible(x / l, x % l)).count();
            let mask = ok(Array::from_vec(mask, &[t, l]));
            let flops = (4 * heads * d * seen) as f64;
            Body::timed(
                move || {
                    let f = if fused {
                        ops::sdpa
                    } else {
                        ops::sdpa_composite
                    };
                    eval_or_die(f(&q, &k, &v, 0.125, Some(&mask)))
                },
                flops,
            )
        }),
    }
}

fn eval_or_die(a: tessera_core::Result<Array>) {
    ok(ok(a).eval());
}

fn matmul_case(n: usize, dtype: Dtype) -> Case {
    let name = format!(
        "matmul_{}_{n}",
        if dtype == Dtype::BF16 { "bf16" } else { "f32" }
    );
    Case {
        name,
        unit: "GFLOPS",
        setup: Box::new(move || {
            let a = rand(&[n, n], dtype, 1);
            let b = rand(&[n, n], dtype, 2);
            Body::timed(
                move || eval_or_die(ops::matmul(&a, &b)),
                2.0 * (n as f64).powi(3),
            )
        }),
    }
}

/// `x @ W^T` with W stored (out, in), as a linear layer holds it: GB/s of weights read.
fn gemv_case(rows: usize, cols: usize, dtype: Dtype) -> Case {
    let name = format!(
        "gemv_{}_{rows}x{cols}",
        if dtype == Dtype::BF16 { "bf16" } else { "f32" }
    );
    Case {
        name,
        unit: "GB/s",
        setup: Box::new(move || {
            let w = rand(&[cols, rows], dtype, 3);
            let x = rand(&[1, rows], dtype, 4);
            let wt = ok(ops::transpose(&w, None));
            Body::timed(
                move || eval_or_die(ops::matmul(&x, &wt)),
                (rows * cols * dtype.size()) as f64,
            )
        }),
    }
}

const M16: usize = 16 << 20;

/// GEMV speed as a percentage of the read bandwidth measured in the same moment: each sample
/// times the GEMV and a sum over an array of the same byte size back to back, so machine noise
/// (other jobs, frequency) hits both alike. Both cycle through enough copies to stream twice
/// the last-level cache (at most 16 copies): with one copy each, a machine with a large L3 (480
/// MB on the Intel VM) held both, and the case measured cache, not memory (165% of the "read
/// bandwidth" for the f32 GEMV).
fn gemv_roofline_case(rows: usize, cols: usize, dtype: Dtype) -> Case {
    let name = format!(
        "gemv_{}_{rows}x{cols}_pct_of_read_bw",
        if dtype == Dtype::BF16 { "bf16" } else { "f32" }
    );
    Case {
        name,
        unit: "%",
        setup: Box::new(move || {
            let bytes = rows * cols * dtype.size();
            let llc = tessera_core::backend::cpu::cache::llc_bytes();
            let copies = (2 * llc).div_ceil(bytes).clamp(1, 16);
            let wts: Vec<Array> = (0..copies)
                .map(|i| {
                    ok(ops::transpose(
                        &rand(&[cols, rows], dtype, 3 + 16 * i as u64),
                        None,
                    ))
                })
                .collect();
            let x = rand(&[1, rows], dtype, 4);
            let sums: Vec<Array> = (0..copies)
                .map(|i| rand(&[bytes / 4], Dtype::F32, 5 + 16 * i as u64))
                .collect();
            let mut body = Body::timed(|| {}, 1.0);
            let mut next = 0usize;
            // One sample: 15 interleaved pairs, the median of their ratios.
            body.measure = Some(Box::new(move || {
                let mut ratios: Vec<f64> = (0..15)
                    .map(|_| {
                        next = (next + 1) % copies;
                        let t = std::time::Instant::now();
                        eval_or_die(ops::matmul(&x, &wts[next]));
                        let g = t.elapsed().as_secs_f64();
                        let t = std::time::Instant::now();
                        eval_or_die(ops::sum(&sums[next], Axes::All, false));
                        100.0 * t.elapsed().as_secs_f64() / g
                    })
                    .collect();
                ratios.sort_by(|a, b| a.total_cmp(b));
                ratios[ratios.len() / 2]
            }));
            body
        }),
    }
}

pub fn ops_cases() -> Vec<Case> {
    let mut v = vec![
        matmul_case(256, Dtype::F32),
        matmul_case(1024, Dtype::F32),
        matmul_case(2048, Dtype::F32),
        matmul_case(4096, Dtype::F32),
        matmul_case(2048, Dtype::BF16),
        gemv_case(4096, 4096, Dtype::F32),
        gemv_case(4096, 11008, Dtype::BF16),
        gemv_roofline_case(4096, 4096, Dtype::F32),
        gemv_roofline_case(4096, 11008, Dtype::BF16),
    ];
    v.push(Case {
        name: "add_f32_16M".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[M16], Dtype::F32, 5);
            let b = rand(&[M16], Dtype::F32, 6);
            Body::timed(move || eval_or_die(ops::add(&a, &b)), (3 * 4 * M16) as f64)
        }),
    });
    v.push(Case {
        name: "exp_f32_16M".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[M16], Dtype::F32, 7);
            Body::timed(move || eval_or_die(ops::exp(&a)), (2 * 4 * M16) as f64)
        }),
    });
    v.push(Case {
        name: "sum_f32_16M".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[M16], Dtype::F32, 8);
            Body::timed(
                move || eval_or_die(ops::sum(&a, Axes::All, false)),
                (4 * M16) as f64,
            )
        }),
    });
    // The machine's read bandwidth, the roofline for GEMV: a sum streams 256 MB once.
    v.push(Case {
        name: "read_bw_f32_256MB".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[64 << 20], Dtype::F32, 11);
            Body::timed(
                move || eval_or_die(ops::sum(&a, Axes::All, false)),
                (4usize << 26) as f64,
            )
        }),
    });
    v.push(Case {
        name: "softmax_f32_4096x4096".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[4096, 4096], Dtype::F32, 9);
            Body::timed(
                move || eval_or_die(ops::softmax(&a, -1)),
                (2 * 4 * 4096 * 4096) as f64,
            )
        }),
    });
    // Decode attention as SmolLM2 runs it: 9 query heads over 3 KV heads of 64, one query row,
    // L cached keys read in place from a 4096-slot f32 cache (µs per call).
    for l in [128usize, 1024] {
        v.push(sdpa_decode_case(9, 3, l, Dtype::F32));
    }
    // The same in the layout models decode with by default: an f16 cache, a 0.5B-class shape
    // (14 query heads over 2 KV heads, Qwen2.5-0.5B), at a long context.
    for l in [1024usize, 4096] {
        v.push(sdpa_decode_case(14, 2, l, Dtype::F16));
    }
    // 128 caches of 2 MB: more than this machine's last-level cache holds.
    v.push(sdpa_decode_cold_case(14, 2, 4096, 128));
    // Prompt attention: one 512-token chunk after 1536 cached positions, and a 32-token chat
    // turn after 4064 (the cache dominates), fused and composite (0.5B-class shape).
    // Gemma 3 270M's sliding-window layers: 4 heads over 1 kv head of 256, a 512-key window.
    for (shape, t, l, window) in [
        ((14, 2, 64), 512, 2048, None),
        ((14, 2, 64), 32, 4096, None),
        ((4, 1, 256), 512, 1024, Some(512)),
    ] {
        for fused in [true, false] {
            v.push(sdpa_prefill_case(shape, t, l, window, fused));
        }
    }
    v.push(Case {
        name: "op_overhead_chain100".into(),
        unit: "us/op",
        setup: Box::new(|| {
            let a = rand(&[1000], Dtype::F32, 10);
            let one = Array::scalar(1.0f32);
            Body::timed(
                move || {
                    let mut x = a.clone();
                    for _ in 0..100 {
                        x = ok(ops::add(&x, &one));
                    }
                    eval_or_die(Ok(x.clone()));
                },
                100.0,
            )
        }),
    });
    // Element functions beyond exp: each one pass over 16M f32 (GB/s of input + output).
    type Unary = fn(&Array) -> tessera_core::Result<Array>;
    let unaries: [(&str, Unary); 8] = [
        ("tanh", ops::tanh),
        ("sigmoid", ops::sigmoid),
        ("sin", ops::sin),
        ("log", ops::log),
        ("erf", ops::erf),
        ("sqrt", ops::sqrt),
        ("expm1", ops::expm1),
        ("atan", ops::arctan),
    ];
    for (name, f) in unaries {
        v.push(Case {
            name: format!("unary_{name}_f32_16M"),
            unit: "GB/s",
            setup: Box::new(move || {
                let a = rand(&[M16], Dtype::F32, 12);
                Body::timed(move || eval_or_die(f(&a)), (2 * 4 * M16) as f64)
            }),
        });
    }
    v.extend(crate::quant_cases::quant_cases());
    v
}
