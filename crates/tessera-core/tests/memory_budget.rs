//! Optional copies (a re-laid-out weight) give way when they would crowd the memory limit.
//! Its own test binary: it lowers the process-wide limit.
#![allow(clippy::unwrap_used)]

use tessera_core::quant::{GgmlType, interleave_for_cpu, quantize_rows};
use tessera_core::{Dtype, memory, ops};

#[test]
fn interleaving_is_skipped_when_the_copy_would_crowd_the_limit() {
    let x = ops::zeros(&[64, 256], Dtype::F32).unwrap();
    let w = quantize_rows(&x, GgmlType::Q4_0).unwrap();
    w.eval().unwrap();
    assert!(memory::fits_in_budget(w.nbytes()));
    // Leave less than a quarter of the limit beyond what is live now.
    let previous = memory::set_memory_limit(memory::active_memory() + w.nbytes());
    assert!(!memory::fits_in_budget(w.nbytes()));
    let kept = interleave_for_cpu(&w, GgmlType::Q4_0).unwrap();
    memory::set_memory_limit(previous);
    assert!(
        kept.is_none(),
        "the natural layout serves under memory pressure"
    );
    // The matmul still runs on it.
    let y = ops::gguf_matmul(
        &ops::ones(&[1, 256], Dtype::F32).unwrap(),
        &w,
        GgmlType::Q4_0,
    );
    assert_eq!(y.unwrap().shape(), &[1, 64]);
}
