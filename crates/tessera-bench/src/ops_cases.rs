//! `tessera bench ops`: kernels and per-op overhead.

use crate::{Body, Case};
use tessera_core::ops::{self, Axes};
use tessera_core::{Array, Dtype, random};

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
            Body {
                run: Box::new(move || eval_or_die(ops::matmul(&a, &b))),
                work: 2.0 * (n as f64).powi(3),
            }
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
            Body {
                run: Box::new(move || eval_or_die(ops::matmul(&x, &wt))),
                work: (rows * cols * dtype.size()) as f64,
            }
        }),
    }
}

const M16: usize = 16 << 20;

pub fn ops_cases() -> Vec<Case> {
    let mut v = vec![
        matmul_case(256, Dtype::F32),
        matmul_case(1024, Dtype::F32),
        matmul_case(2048, Dtype::F32),
        matmul_case(4096, Dtype::F32),
        matmul_case(2048, Dtype::BF16),
        gemv_case(4096, 4096, Dtype::F32),
        gemv_case(4096, 11008, Dtype::BF16),
    ];
    v.push(Case {
        name: "add_f32_16M".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[M16], Dtype::F32, 5);
            let b = rand(&[M16], Dtype::F32, 6);
            Body {
                run: Box::new(move || eval_or_die(ops::add(&a, &b))),
                work: (3 * 4 * M16) as f64,
            }
        }),
    });
    v.push(Case {
        name: "exp_f32_16M".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[M16], Dtype::F32, 7);
            Body {
                run: Box::new(move || eval_or_die(ops::exp(&a))),
                work: (2 * 4 * M16) as f64,
            }
        }),
    });
    v.push(Case {
        name: "sum_f32_16M".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[M16], Dtype::F32, 8);
            Body {
                run: Box::new(move || eval_or_die(ops::sum(&a, Axes::All, false))),
                work: (4 * M16) as f64,
            }
        }),
    });
    // The machine's read bandwidth, the roofline for GEMV: a sum streams 256 MB once.
    v.push(Case {
        name: "read_bw_f32_256MB".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[64 << 20], Dtype::F32, 11);
            Body {
                run: Box::new(move || eval_or_die(ops::sum(&a, Axes::All, false))),
                work: (4usize << 26) as f64,
            }
        }),
    });
    v.push(Case {
        name: "softmax_f32_4096x4096".into(),
        unit: "GB/s",
        setup: Box::new(|| {
            let a = rand(&[4096, 4096], Dtype::F32, 9);
            Body {
                run: Box::new(move || eval_or_die(ops::softmax(&a, -1))),
                work: (2 * 4 * 4096 * 4096) as f64,
            }
        }),
    });
    v.push(Case {
        name: "op_overhead_chain100".into(),
        unit: "us/op",
        setup: Box::new(|| {
            let a = rand(&[1000], Dtype::F32, 10);
            let one = Array::scalar(1.0f32);
            Body {
                run: Box::new(move || {
                    let mut x = a.clone();
                    for _ in 0..100 {
                        x = ok(ops::add(&x, &one));
                    }
                    eval_or_die(Ok(x.clone()));
                }),
                work: 100.0,
            }
        }),
    });
    v
}
