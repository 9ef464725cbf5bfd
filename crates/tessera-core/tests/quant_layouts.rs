//! The in-memory interleaved layouts (Q4_0x8, Q4_1x8, Q5_0x8, Q8_0x8, Q4_Kx8, Q5_Kx8,
//! Q6_Kx8) through the public API: the matmul, decoding, row lookup and gradients give what the
//! natural matrix gives; misuse is an error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_core::quant::{GgmlType, interleave_for_cpu, quantize_rows};
use tessera_core::transforms::vmap;
use tessera_core::{Array, ops};

mod common;
use common::{close, uniform};

/// Whether this CPU runs the SIMD quant kernels (AVX2 + FMA + F16C), which is when tessera
/// interleaves Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K and Q6_K.
fn simd_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let scalar = std::env::var("TESSERA_SIMD").is_ok_and(|v| v == "scalar");
        !scalar
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[test]
fn interleaved_layouts_give_what_the_natural_matrix_gives() {
    for (format, layout, k, row_bytes) in [
        (GgmlType::Q4_0, GgmlType::Q4_0x8, 96, 54),
        (GgmlType::Q4_1, GgmlType::Q4_1x8, 96, 60),
        (GgmlType::Q5_0, GgmlType::Q5_0x8, 96, 66),
        (GgmlType::Q8_0, GgmlType::Q8_0x8, 96, 102),
        (GgmlType::Q4_K, GgmlType::Q4_Kx8, 512, 288),
        (GgmlType::Q5_K, GgmlType::Q5_Kx8, 512, 352),
        (GgmlType::Q6_K, GgmlType::Q6_Kx8, 512, 420),
    ] {
        check_layout(format, layout, k, row_bytes);
    }
}

fn check_layout(format: GgmlType, layout: GgmlType, k: usize, row_bytes: usize) {
    let n = 40;
    let w = quantize_rows(&uniform(&[n, k], 1), format).unwrap();
    assert_eq!(w.shape(), &[n, row_bytes]);
    let packed = interleave_for_cpu(&w, format).unwrap();
    if !simd_kernels() {
        assert!(
            packed.is_none(),
            "the portable kernels read the natural layout"
        );
        return;
    }
    let (w8, f8) = packed.expect("whole groups of 8 rows are interleaved");
    assert_eq!(f8, layout);
    assert_eq!(w8.shape(), w.shape());
    // Decode kernel (1-4 rows), several tiles, and the prefill kernels (from 5 rows on).
    for m in [1, 3, 7, 20] {
        let x = uniform(&[m, k], 10 + m as u64);
        let want = ops::gguf_matmul(&x, &w, format).unwrap();
        let got = ops::gguf_matmul(&x, &w8, f8).unwrap();
        close(&got, &want, 1e-5);
    }
    // Decoding and row lookups are exact.
    let d = ops::gguf_dequantize(&w, format, k).unwrap();
    let d8 = ops::gguf_dequantize(&w8, f8, k).unwrap();
    assert_eq!(d.to_vec::<f32>().unwrap(), d8.to_vec::<f32>().unwrap());
    let ids = Array::from_slice(&[0i32, 39, 17, 8, 7, 17], &[2, 3]).unwrap();
    let rows = ops::gguf_take_rows(&w, &ids, format, k).unwrap();
    let rows8 = ops::gguf_take_rows(&w8, &ids, f8, k).unwrap();
    assert_eq!(rows8.shape(), &[2, 3, k]);
    assert_eq!(
        rows.to_vec::<f32>().unwrap(),
        rows8.to_vec::<f32>().unwrap()
    );
    // A negative id counts from the end; one outside the matrix is an error, not a wild read.
    let last = ops::gguf_take_rows(&w8, &Array::from_slice(&[-1i64], &[1]).unwrap(), f8, k);
    let want = ops::slice_axis(&d, 0, n - 1, n).unwrap();
    assert_eq!(
        last.unwrap().to_vec::<f32>().unwrap(),
        want.to_vec::<f32>().unwrap()
    );
    for bad in [40i32, -41] {
        let far = ops::gguf_take_rows(&w8, &Array::from_slice(&[bad], &[1]).unwrap(), f8, k);
        let err = far.unwrap().eval().unwrap_err().to_string();
        assert!(err.contains("out of range"), "id {bad}: {err}");
    }
    // vmap over the ids (the lookup itself), and over a batch of tables (one per example).
    let take = move |xs: &[Array]| -> tessera_core::Result<Vec<Array>> {
        Ok(vec![ops::gguf_take_rows(&xs[0], &xs[1], f8, k)?])
    };
    let by_ids = vmap(take, &[w8.clone(), ids.clone()], &[None, Some(1)], &[0]).unwrap();
    let each: Vec<Array> = (0..3)
        .map(|i| {
            let col = ops::slice_axis(&ids, 1, i, i + 1).unwrap();
            let col = ops::reshape(&col, &[2]).unwrap();
            ops::gguf_take_rows(&w8, &col, f8, k).unwrap()
        })
        .collect();
    let want = ops::stack(&each, 0).unwrap();
    assert_eq!(by_ids[0].shape(), &[3, 2, k]);
    assert_eq!(
        by_ids[0].to_vec::<f32>().unwrap(),
        want.to_vec::<f32>().unwrap()
    );
    let tables = ops::stack(&[w8.clone(), w8.clone()], 0).unwrap();
    let by_table = vmap(take, &[tables, ids.clone()], &[Some(0), None], &[0]).unwrap();
    assert_eq!(by_table[0].shape(), &[2, 2, 3, k]);
    let twice = ops::stack(&[rows8.clone(), rows8.clone()], 0).unwrap();
    assert_eq!(
        by_table[0].to_vec::<f32>().unwrap(),
        twice.to_vec::<f32>().unwrap()
    );
    // The gradient with respect to x.
    let x = uniform(&[2, k], 5);
    let loss = |w: Array, f: GgmlType| {
        move |a: &[Array]| -> tessera_core::Result<Array> {
            ops::sum(&ops::square(&ops::gguf_matmul(&a[0], &w, f)?)?, None, false)
        }
    };
    let g =
        tessera_core::transforms::grad(loss(w.clone(), format), std::slice::from_ref(&x)).unwrap();
    let g8 = tessera_core::transforms::grad(loss(w8.clone(), f8), &[x]).unwrap();
    close(&g8[0], &g[0], 1e-4);
}

#[test]
fn interleaving_applies_only_where_it_fits() {
    // Not whole groups of 8 rows, or a format without an interleaved layout: the natural
    // layout stays.
    let w12 = quantize_rows(&uniform(&[12, 64], 2), GgmlType::Q4_0).unwrap();
    assert!(interleave_for_cpu(&w12, GgmlType::Q4_0).unwrap().is_none());
    let q5 = quantize_rows(&uniform(&[16, 64], 3), GgmlType::Q5_1).unwrap();
    assert!(interleave_for_cpu(&q5, GgmlType::Q5_1).unwrap().is_none());
    // A matrix that is not whole groups cannot be used as Q4_0x8, nor decoded row by row.
    let x = uniform(&[1, 64], 4);
    let err = ops::gguf_matmul(&x, &w12, GgmlType::Q4_0x8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiple of 8"), "{err}");
    let one_row = ops::slice_axis(&w12, 0, 0, 1).unwrap();
    assert!(ops::gguf_dequantize(&one_row, GgmlType::Q4_0x8, 64).is_err());
    // The in-memory layout is not a quantization target.
    assert!(quantize_rows(&x, GgmlType::Q4_0x8).is_err());
}

#[test]
fn quantize_rows_round_trips_within_the_format_error() {
    let x = uniform(&[3, 2, 64], 6);
    for (ty, tol) in [(GgmlType::Q8_0, 0.01), (GgmlType::Q4_0, 0.15)] {
        let q = quantize_rows(&x, ty).unwrap();
        assert_eq!(q.shape(), &[3, 2, ty.row_bytes(64).unwrap()]);
        let back = ops::gguf_dequantize(&q, ty, 64).unwrap();
        let (a, b) = (x.to_vec::<f32>().unwrap(), back.to_vec::<f32>().unwrap());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst <= tol, "{ty}: worst error {worst}");
    }
    assert_eq!(
        quantize_rows(&x, GgmlType::F16).unwrap().shape(),
        &[3, 2, 128]
    );
    assert!(quantize_rows(&uniform(&[2, 50], 7), GgmlType::Q4_0).is_err());
}
