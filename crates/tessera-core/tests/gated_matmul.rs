//! `ops::gguf_gated_matmul`: a gated MLP's first product with the activation applied by the
//! kernel. Checked against the separate gate and up products (what the layout means), against
//! its composite (bit for bit) on every kernel path (natural and interleaved layouts, decode and prefill row
//! counts), through grad, jvp and vmap, and on malformed inputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_core::quant::{GgmlType, interleave_for_cpu, quantize_rows};
use tessera_core::transforms::{grad, jvp, vmap};
use tessera_core::{Array, Dtype, GateActivation, ops};

mod common;
use common::{close, uniform};

const ACTS: [GateActivation; 2] = [GateActivation::Silu, GateActivation::GeluTanh];

/// Gate and up matrices of `f` rows, quantized, and their interleaved stack.
fn gate_up(f: usize, k: usize, format: GgmlType, seed: u64) -> (Array, Array, Array) {
    let g = quantize_rows(&uniform(&[f, k], seed), format).unwrap();
    let u = quantize_rows(&uniform(&[f, k], seed + 1), format).unwrap();
    let w = ops::interleave_gate_up(&g, &u).unwrap();
    w.eval().unwrap();
    (g, u, w)
}

#[test]
fn gated_product_is_the_activation_of_the_gate_times_the_up_product() {
    let (f, k) = (48, 64);
    let (g, u, w) = gate_up(f, k, GgmlType::Q8_0, 1);
    assert_eq!(w.shape(), &[2 * f, g.shape()[1]]);
    for act in ACTS {
        for m in [1, 5] {
            let x = uniform(&[m, k], 7 + m as u64);
            let gate = ops::gguf_matmul(&x, &g, GgmlType::Q8_0).unwrap();
            let up = ops::gguf_matmul(&x, &u, GgmlType::Q8_0).unwrap();
            let want = ops::multiply(&ops::gate_activation(&gate, act).unwrap(), &up).unwrap();
            let got = ops::gguf_gated_matmul(&x, &w, GgmlType::Q8_0, act).unwrap();
            assert_eq!(got.shape(), &[m, f]);
            close(&got, &want, 1e-6);
            // The plain ops for the activations, as the nn layers write them.
            let silu = ops::multiply(&gate, &ops::sigmoid(&gate).unwrap()).unwrap();
            if act == GateActivation::Silu {
                close(&got, &ops::multiply(&silu, &up).unwrap(), 1e-6);
            }
        }
    }
}

/// Every kernel family the product can run on: natural rows (decode and panel kernels), the
/// interleaved layouts (decode kernel with the per-thread epilogue; prefill through the
/// de-interleaving or AMX paths), K-quants, and row counts on each side of the AMX threshold.
/// Bit for bit: the same product, the same element functions in the same order.
#[test]
fn fused_product_equals_its_composite_on_every_path() {
    for (format, k) in [
        (GgmlType::Q4_0, 96),
        (GgmlType::Q8_0, 96),
        (GgmlType::Q4_K, 256),
        (GgmlType::Q6_K, 256),
    ] {
        // 64 gate rows: whole 32-row blocks; 40: a last block of 16 rows (one gate and one up
        // run) on the AMX path.
        for f in [64, 40] {
            let (_, _, w) = gate_up(f, k, format, 3);
            let mut layouts = vec![(w.clone(), format)];
            if let Some((w8, f8)) = interleave_for_cpu(&w, format).unwrap() {
                layouts.push((w8, f8));
            }
            for (w, ty) in layouts {
                for act in ACTS {
                    // 100 rows: interleaved layouts on the AMX tiles too, where the gating runs
                    // on each finished block.
                    for m in [1, 4, 9, 70, 100] {
                        let x = uniform(&[m, k], 20 + m as u64);
                        let want = ops::gguf_gated_matmul_composite(&x, &w, ty, act).unwrap();
                        let got = ops::gguf_gated_matmul(&x, &w, ty, act).unwrap();
                        close(&got, &want, 0.0);
                    }
                }
            }
        }
    }
}

#[test]
fn leading_dims_and_low_precision_inputs_keep_their_shape_and_dtype() {
    let (_, _, w) = gate_up(16, 64, GgmlType::Q4_0, 5);
    let x = uniform(&[2, 3, 64], 9);
    let y = ops::gguf_gated_matmul(&x, &w, GgmlType::Q4_0, GateActivation::Silu).unwrap();
    assert_eq!(y.shape(), &[2, 3, 16]);
    let xb = x.astype(Dtype::BF16).unwrap();
    let yb = ops::gguf_gated_matmul(&xb, &w, GgmlType::Q4_0, GateActivation::Silu).unwrap();
    assert_eq!(yb.dtype(), Dtype::BF16);
    let want = ops::gguf_gated_matmul_composite(&xb, &w, GgmlType::Q4_0, GateActivation::Silu)
        .unwrap()
        .astype(Dtype::F32)
        .unwrap();
    // The kernel gates in f32 and rounds once; the composite rounds after every op.
    close(&yb.astype(Dtype::F32).unwrap(), &want, 1e-2);
}

#[test]
fn gradients_and_vmap_follow_the_composite() {
    let (f, k) = (32, 64);
    let (_, _, w) = gate_up(f, k, GgmlType::Q8_0, 11);
    let x = uniform(&[3, k], 12);
    type Product = fn(&Array, &Array, GgmlType, GateActivation) -> tessera_core::Result<Array>;
    let (fused, composite): (Product, Product) =
        (ops::gguf_gated_matmul, ops::gguf_gated_matmul_composite);
    for act in ACTS {
        // Gradient of the sum, and the forward-mode tangent, by either formulation.
        let derivatives = |f: Product| {
            let g = grad(
                |xs: &[Array]| ops::sum(&f(&xs[0], &w, GgmlType::Q8_0, act)?, None, false),
                std::slice::from_ref(&x),
            )
            .unwrap();
            let t = uniform(&[3, k], 13);
            let (_, tangent) = jvp(
                |xs| Ok(vec![f(&xs[0], &w, GgmlType::Q8_0, act)?]),
                std::slice::from_ref(&x),
                std::slice::from_ref(&t),
            )
            .unwrap();
            (g[0].clone(), tangent[0].clone())
        };
        let ((gf, tf), (gc, tc)) = (derivatives(fused), derivatives(composite));
        close(&gf, &gc, 1e-5);
        close(&tf, &tc, 1e-5);
        // Mapped over a batch of inputs: one more leading dim, the same values.
        let xs = uniform(&[4, 3, k], 14);
        let mapped = vmap(
            |xs| {
                Ok(vec![ops::gguf_gated_matmul(
                    &xs[0],
                    &w,
                    GgmlType::Q8_0,
                    act,
                )?])
            },
            std::slice::from_ref(&xs),
            &[Some(0)],
            &[0],
        )
        .unwrap();
        assert_eq!(mapped[0].shape(), &[4, 3, f]);
        let want = ops::gguf_gated_matmul(&xs, &w, GgmlType::Q8_0, act).unwrap();
        close(&mapped[0], &want, 0.0);
    }
}

#[test]
fn malformed_inputs_are_errors() {
    let (g, u, _) = gate_up(16, 64, GgmlType::Q4_0, 21);
    // 8 rows: not a whole pair of runs.
    let half = ops::slice_axis(&g, 0, 0, 8).unwrap();
    let x = uniform(&[1, 64], 22);
    let e = ops::gguf_gated_matmul(&x, &half, GgmlType::Q4_0, GateActivation::Silu).unwrap_err();
    assert!(e.to_string().contains("pairs"), "{e}");
    // Gate and up of different shapes, or row counts that do not split into runs.
    let e = ops::interleave_gate_up(&g, &half).unwrap_err();
    assert!(e.to_string().contains("one shape"), "{e}");
    let odd = ops::slice_axis(&g, 0, 0, 12).unwrap();
    let e = ops::interleave_gate_up(&odd, &odd).unwrap_err();
    assert!(e.to_string().contains("runs of 8"), "{e}");
    // A product whose last axis is not whole pairs of runs has no gate/up views.
    let e = ops::gate_up_views(&uniform(&[2, 24], 24)).unwrap_err();
    assert!(e.to_string().contains("whole pairs"), "{e}");
    // The product's own checks still apply (inner width).
    let x = uniform(&[1, 32], 23);
    let w = ops::interleave_gate_up(&g, &u).unwrap();
    assert!(ops::gguf_gated_matmul(&x, &w, GgmlType::Q4_0, GateActivation::Silu).is_err());
}
