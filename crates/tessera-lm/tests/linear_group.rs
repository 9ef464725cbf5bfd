//! `LinearGroup`: maps stacked into one matrix give the same outputs as the maps alone, in every
//! storage the loaders produce, before and after the CPU layout (`for_matmul`); maps that cannot
//! share a matrix stay apart. `GateUp`: quantized gate and up maps paired into one gated
//! product give what the two maps and the activation give.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_core::quant::{GgmlType, quantize_rows};
use tessera_core::{Array, Dtype, ops, random};
use tessera_lm::config::Activation;
use tessera_lm::gate_up::GateUp;
use tessera_lm::linear::{Linear, LinearGroup};
use tessera_lm::weights::Weight;

fn rand(shape: &[usize], seed: u64) -> Array {
    let k = random::key(seed);
    let a = random::uniform(-1.0, 1.0, shape, Dtype::F32, Some(&k)).unwrap();
    a.eval().unwrap();
    a
}

/// A `rows × cols` matrix stored as `storage` describes.
fn weight(storage: &str, rows: usize, cols: usize, seed: u64) -> Weight {
    let w = rand(&[rows, cols], seed);
    match storage {
        "f32" => Weight::Dense(w),
        "bf16" => Weight::Dense(w.astype(Dtype::BF16).unwrap()),
        "affine4" => {
            let (packed, scales, biases) = ops::quantize(&w, 32, 4).unwrap();
            Weight::Affine {
                packed,
                scales,
                biases,
                group_size: 32,
                bits: 4,
            }
        }
        gguf => {
            let format = match gguf {
                "q4_0" => GgmlType::Q4_0,
                "q8_0" => GgmlType::Q8_0,
                "q4_k" => GgmlType::Q4_K,
                other => panic!("no storage {other}"),
            };
            Weight::Quantized {
                blocks: quantize_rows(&w, format).unwrap(),
                format,
                in_features: cols,
            }
        }
    }
}

fn linear(storage: &str, rows: usize, cols: usize, seed: u64, bias: bool) -> Linear {
    Linear {
        weight: weight(storage, rows, cols, seed),
        bias: bias.then(|| rand(&[rows], seed + 100)),
    }
}

fn assert_same(a: &[Array], b: &[Array], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: output count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.shape(), y.shape(), "{what}: output {i} shape");
        let (x, y) = (
            x.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap(),
            y.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap(),
        );
        for (j, (p, q)) in x.iter().zip(&y).enumerate() {
            assert!(
                (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                "{what}: output {i} element {j}: stacked {p}, alone {q}"
            );
        }
    }
}

#[test]
fn stacked_maps_equal_the_maps_alone() {
    // q, k, v of a small grouped-query layer: 64 + 16 + 16 rows over 256 inputs.
    let rows = [64, 16, 16];
    for storage in ["f32", "bf16", "affine4", "q4_0", "q8_0", "q4_k"] {
        for bias in [false, true] {
            let parts: Vec<Linear> = rows
                .iter()
                .enumerate()
                .map(|(i, &r)| linear(storage, r, 256, 10 * i as u64 + 1, bias))
                .collect();
            let fused = LinearGroup::fuse(parts.clone()).unwrap();
            assert_eq!(fused.matmuls(), 1, "{storage}: stacked into one matrix");
            assert_eq!(
                fused.shapes(),
                vec![(64, 256), (16, 256), (16, 256)],
                "{storage}: shapes of the maps"
            );
            // One token (decode) and five (prefill), in the activations' f32.
            for t in [1, 5] {
                let x = rand(&[1, t, 256], 7);
                let alone: Vec<Array> = parts.iter().map(|l| l.forward(&x).unwrap()).collect();
                let what = format!("{storage}, bias {bias}, {t} tokens");
                assert_same(&fused.forward(&x).unwrap(), &alone, &what);
                let laid_out = fused
                    .clone()
                    .for_matmul(&tessera_core::memory::Arena::new())
                    .unwrap();
                assert_same(&laid_out.forward(&x).unwrap(), &alone, &what);
            }
        }
    }
}

#[test]
fn maps_that_cannot_share_a_matrix_stay_apart() {
    let x = rand(&[1, 2, 256], 3);
    let cases: Vec<(&str, Vec<Linear>)> = vec![
        (
            "formats differ",
            vec![
                linear("q4_0", 32, 256, 1, false),
                linear("q8_0", 32, 256, 2, false),
            ],
        ),
        (
            "one bias missing",
            vec![
                linear("q8_0", 32, 256, 1, true),
                linear("q8_0", 32, 256, 2, false),
            ],
        ),
        (
            "already interleaved",
            vec![
                linear("q4_0", 32, 256, 1, false)
                    .for_matmul(&tessera_core::memory::Arena::new())
                    .unwrap(),
                linear("q4_0", 32, 256, 2, false)
                    .for_matmul(&tessera_core::memory::Arena::new())
                    .unwrap(),
            ],
        ),
    ];
    for (what, parts) in cases {
        let g = LinearGroup::fuse(parts.clone()).unwrap();
        let interleaved = parts.iter().any(|l| l.weight.kind() == "Q4_0x8");
        if what != "already interleaved" || interleaved {
            assert_eq!(g.matmuls(), 2, "{what}: kept apart");
        }
        let alone: Vec<Array> = parts.iter().map(|l| l.forward(&x).unwrap()).collect();
        assert_same(&g.forward(&x).unwrap(), &alone, what);
    }
}

#[test]
fn a_stacked_matrix_splits_into_its_maps() {
    // Phi-3's qkv_proj: one stored matrix, three outputs.
    let whole = linear("q8_0", 96, 256, 5, true);
    let g = LinearGroup::stacked(whole.clone(), vec![64, 16, 16]).unwrap();
    let x = rand(&[1, 3, 256], 6);
    let y = whole.forward(&x).unwrap();
    let want: Vec<Array> = [(0, 64), (64, 80), (80, 96)]
        .iter()
        .map(|&(s, e)| ops::slice_axis(&y, 2, s, e).unwrap())
        .collect();
    assert_same(&g.forward(&x).unwrap(), &want, "stacked");
    let err = LinearGroup::stacked(whole, vec![64, 16]).err().unwrap();
    assert!(
        err.to_string().contains("cannot split 96 output rows"),
        "{err}"
    );
}

/// An f16 `rows x cols` matrix quantized the MLX way, and the same after `for_matmul`.
fn affine_and_laid_out(rows: usize, cols: usize, group: usize, bits: u32) -> (Weight, Weight) {
    let w = rand(&[rows, cols], 5).astype(Dtype::F16).unwrap();
    let (packed, scales, biases) = ops::quantize(&w, group, bits).unwrap();
    let affine = Weight::Affine {
        packed,
        scales,
        biases,
        group_size: group,
        bits,
    };
    let laid_out = affine
        .clone()
        .for_matmul(&tessera_core::memory::Arena::new())
        .unwrap();
    (affine, laid_out)
}

/// `laid_out` multiplies as `affine` does, up to the activations' 8-bit quantization, and gives
/// the same embedding rows.
fn assert_same_map(affine: &Weight, laid_out: &Weight, what: &str) {
    assert_eq!(laid_out.in_features(), affine.in_features(), "{what}");
    assert_eq!(laid_out.out_features(), affine.out_features(), "{what}");
    for t in [1, 6] {
        let x = rand(&[t, affine.in_features()], 9);
        let want = affine.apply(&x).unwrap().to_vec::<f32>().unwrap();
        let got = laid_out.apply(&x).unwrap().to_vec::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!(
                (a - b).abs() <= 0.01 * scale,
                "{what}, {t} rows [{i}]: {a} vs {b}"
            );
        }
    }
    let last = affine.out_features() as u32 - 1;
    let ids = Array::from_vec(vec![0u32, last, 7], &[3]).unwrap();
    let want = affine.rows(&ids).unwrap().to_vec::<f32>().unwrap();
    let got = laid_out.rows(&ids).unwrap().to_vec::<f32>().unwrap();
    let close = want
        .iter()
        .zip(&got)
        .all(|(a, b)| (a - b).abs() <= 1e-3 * (1.0 + a.abs()));
    assert!(close, "{what}: rows differ");
}

#[test]
fn a_4_bit_affine_matrix_with_f16_scales_becomes_interleaved_q4_1() {
    for group in [32, 64, 128] {
        let (affine, laid_out) = affine_and_laid_out(64, 256, group, 4);
        let expected = tessera_core::quant::cpu_layout(GgmlType::Q4_1);
        if expected == GgmlType::Q4_1 {
            // No interleaved kernels here (scalar build or TESSERA_REPACK=0): stays affine.
            assert_eq!(laid_out.kind(), affine.kind());
        } else {
            // Groups of 64 and 128 keep one header per group, groups of 32 are Q4_1x8.
            let want = match group {
                64 => "Q4_1x8s2",
                128 => "Q4_1x8s4",
                _ => expected.name(),
            };
            assert_eq!(laid_out.kind(), want, "group {group}");
            assert!(
                laid_out.nbytes() <= affine.nbytes(),
                "no bigger than the checkpoint"
            );
        }
        assert_same_map(&affine, &laid_out, &format!("4 bits, group {group}"));
    }
}

#[test]
fn an_8_bit_affine_matrix_with_f16_scales_keeps_its_bytes_in_the_cpu_layout() {
    for (group, layout) in [(32, "A8x8"), (64, "A8x8s2"), (128, "A8x8s4")] {
        let (affine, laid_out) = affine_and_laid_out(24, 512, group, 8);
        // The layout where this CPU has AVX-512 VNNI (tested exactly in tessera-core), else
        // the affine kernels.
        let kind = laid_out.kind();
        assert!(
            kind == layout || kind == affine.kind(),
            "group {group}: {kind}"
        );
        assert_eq!(laid_out.nbytes(), affine.nbytes(), "the checkpoint's bytes");
        assert_same_map(&affine, &laid_out, &format!("8 bits, group {group}"));
    }
}

/// `act(x @ gateᵀ) * (x @ upᵀ)` from the two maps applied alone.
fn gated_alone(gate: &Linear, up: &Linear, x: &Array, act: Activation) -> Array {
    let g = gate.forward(x).unwrap();
    ops::multiply(
        &ops::gate_activation(&g, act).unwrap(),
        &up.forward(x).unwrap(),
    )
    .unwrap()
}

/// Largest difference of `got` from `want`, relative to `want`'s largest magnitude.
fn rel_diff(got: &Array, want: &Array) -> f32 {
    let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    assert_eq!(g.len(), w.len());
    let scale = w.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
    g.iter()
        .zip(&w)
        .fold(0f32, |a, (p, q)| a.max((p - q).abs() / scale))
}

#[test]
fn gate_and_up_pair_into_one_gated_product() {
    // (storage, paired, tolerance after the CPU layout): the integer layouts give what the
    // natural rows give; affine f16 matrices become Q4_1 with 8-bit activations (1%); affine
    // f32 ones stay affine and are gated after the product.
    let arena = tessera_core::memory::Arena::new();
    for (storage, paired, tol) in [
        ("q4_0", true, 1e-5),
        ("q8_0", true, 1e-5),
        ("q4_k", true, 1e-5),
        ("affine4", true, 1e-5),
        ("affine4_f16", true, 1e-2),
        ("f32", false, 1e-5),
        ("bf16", false, 1e-5),
    ] {
        let make = |seed| {
            let weight = if storage == "affine4_f16" {
                // As an f16 MLX checkpoint has them: f16 scales and biases, groups of 64.
                let w = rand(&[64, 256], seed).astype(Dtype::F16).unwrap();
                let (packed, scales, biases) = ops::quantize(&w, 64, 4).unwrap();
                Weight::Affine {
                    packed,
                    scales,
                    biases,
                    group_size: 64,
                    bits: 4,
                }
            } else {
                weight(storage, 64, 256, seed)
            };
            Linear { weight, bias: None }
        };
        let (gate, up) = (make(1), make(2));
        let gu = GateUp::new(gate.clone(), up.clone()).unwrap();
        assert_eq!(gu.is_paired(), paired, "{storage}");
        assert_eq!(gu.shapes(), vec![(64, 256); 2], "{storage}");
        let laid_out = gu.clone().for_matmul(&arena).unwrap();
        for act in [Activation::Silu, Activation::GeluTanh] {
            for t in [1, 7] {
                let x = rand(&[1, t, 256], 30 + t as u64);
                let want = gated_alone(&gate, &up, &x, act).astype(Dtype::F32).unwrap();
                let got = gu.forward(&x, act).unwrap().astype(Dtype::F32).unwrap();
                assert_eq!(got.shape(), &[1, t, 64]);
                let d = rel_diff(&got, &want);
                assert!(d <= 1e-5, "{storage} {act:?} {t} rows: {d}");
                let got = laid_out
                    .forward(&x, act)
                    .unwrap()
                    .astype(Dtype::F32)
                    .unwrap();
                let d = rel_diff(&got, &want);
                assert!(d <= tol, "{storage} {act:?} {t} rows, laid out: {d}");
            }
        }
    }
    // Biases keep the maps apart (no checkpoint family has them, but the loader allows them).
    let biased = GateUp::new(
        linear("q4_0", 64, 256, 3, true),
        linear("q4_0", 64, 256, 4, true),
    )
    .unwrap();
    assert!(!biased.is_paired());
    // So do differing formats (a Q4_K_M file may mix them).
    let mixed = GateUp::new(
        linear("q4_k", 64, 256, 3, false),
        linear("q8_0", 64, 256, 4, false),
    )
    .unwrap();
    assert!(!mixed.is_paired());
    let x = rand(&[2, 256], 40);
    let want = gated_alone(
        &linear("q4_k", 64, 256, 3, false),
        &linear("q8_0", 64, 256, 4, false),
        &x,
        Activation::Silu,
    );
    assert!(rel_diff(&mixed.forward(&x, Activation::Silu).unwrap(), &want) <= 1e-5);
}

#[test]
fn a_stacked_gate_up_matrix_pairs_too() {
    // Phi-3's gate_up_proj: gate rows, then up rows.
    let whole = linear("q4_0", 128, 256, 5, false);
    let gu = GateUp::stacked(whole.clone(), 64).unwrap();
    assert!(gu.is_paired());
    let half = |r0| Linear {
        weight: whole.weight.row_range(r0, r0 + 64).unwrap(),
        bias: None,
    };
    let x = rand(&[3, 256], 41);
    let want = gated_alone(&half(0), &half(64), &x, Activation::GeluTanh);
    let got = gu.forward(&x, Activation::GeluTanh).unwrap();
    assert!(rel_diff(&got, &want) <= 1e-5);
    let err = GateUp::stacked(whole, 60).err().unwrap();
    assert!(err.to_string().contains("cannot split 128"), "{err}");
}
