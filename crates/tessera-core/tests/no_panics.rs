//! Random (often invalid) arguments to the public ops: every call either returns a value or an
//! `Err`, at call time or at eval. None may panic.

use proptest::prelude::*;
use std::panic::{AssertUnwindSafe, catch_unwind};
use tessera_core::ops::{self, Axes, PadMode, SplitAt};
use tessera_core::{Array, Dtype, Result};

fn array(shape: &[usize], dt: Dtype) -> Array {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
    Array::from_slice(&v, shape).unwrap().astype(dt).unwrap()
}

fn run(what: &str, f: impl FnOnce() -> Result<Array>) {
    let r = catch_unwind(AssertUnwindSafe(|| f().and_then(|a| a.eval().map(|_| a))));
    assert!(r.is_ok(), "{what} panicked");
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..4, 0..4)
}

fn dtype_strategy() -> impl Strategy<Value = Dtype> {
    prop::sample::select(Dtype::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ops_never_panic(
        sa in shape_strategy(), sb in shape_strategy(), da in dtype_strategy(), db in dtype_strategy(),
        ax in -5isize..5, ax2 in -5isize..5, k in -3isize..6, n in 0usize..5,
        idx in prop::collection::vec(-6i64..6, 0..5),
    ) {
        let a = array(&sa, da);
        let b = array(&sb, db);
        let i = Array::from_slice(&idx, &[idx.len()]).unwrap();
        run("add", || ops::add(&a, &b));
        run("divide", || ops::divide(&a, &b));
        run("floor_divide", || ops::floor_divide(&a, &b));
        run("remainder", || ops::remainder(&a, &b));
        run("power", || ops::power(&a, &b));
        run("left_shift", || ops::left_shift(&a, &b));
        run("matmul", || ops::matmul(&a, &b));
        run("where", || ops::where_(&a, &a, &b));
        run("sum", || ops::sum(&a, ax, true));
        run("sum axes", || ops::sum(&a, Axes::Some(vec![ax, ax2]), false));
        run("max", || ops::max(&a, ax, false));
        run("argmax", || ops::argmax(&a, Some(ax), false));
        run("var", || ops::var(&a, Axes::All, false, n));
        run("logsumexp", || ops::logsumexp(&a, ax, false));
        run("softmax", || ops::softmax(&a, ax));
        run("cumsum", || ops::cumsum(&a, Some(ax), k > 0, k % 2 == 0));
        run("sort", || ops::sort(&a, Some(ax)));
        run("topk", || ops::topk(&a, n, Some(ax)));
        run("argpartition", || ops::argpartition(&a, k, Some(ax)));
        run("reshape", || ops::reshape_infer(&a, &[k, -1]));
        run("transpose", || ops::transpose(&a, Some(&[ax, ax2])));
        run("swapaxes", || ops::swapaxes(&a, ax, ax2));
        run("expand_dims", || ops::expand_dims(&a, &[ax]));
        run("squeeze", || ops::squeeze(&a, ax));
        run("broadcast_to", || ops::broadcast_to(&a, &sb));
        run("concatenate", || ops::concatenate(&[a.clone(), b.clone()], ax));
        run("stack", || ops::stack(&[a.clone(), b.clone()], ax));
        run("split", || ops::split(&a, SplitAt::Sections(n), ax).map(|v| v.into_iter().next().unwrap_or_else(|| a.clone())));
        run("split at", || ops::split(&a, SplitAt::Indices(vec![k, ax]), ax2).map(|v| v[0].clone()));
        run("pad", || ops::pad(&a, &vec![(n, 1); a.ndim()], PadMode::Edge));
        run("repeat", || ops::repeat(&a, n, Some(ax)));
        run("tile", || ops::tile(&a, &[n, 2]));
        run("roll", || ops::roll(&a, k, Some(ax)));
        run("tril", || ops::tril(&a, k));
        run("slice", || ops::slice(&a, &[k, ax], &[ax2, k], &[ax, 1]));
        run("slice_update", || ops::slice_update(&a, &b, &[k], &[ax2], &[ax]));
        run("take", || ops::take(&a, &i, Some(ax)));
        run("take flat", || ops::take(&a, &i, None));
        run("take_along_axis", || ops::take_along_axis(&a, &b.astype(Dtype::I32)?, Some(ax)));
        run("put_along_axis", || ops::put_along_axis(&a, &b.astype(Dtype::I32)?, &b, ax));
        run("scatter_add", || ops::scatter_add(&a, &i, &b, ax));
        run("gather", || ops::gather(&a, &[i.clone(), i.clone()], &[ax, ax2]));
        run("einsum", || ops::einsum("ij,jk->ik", &[a.clone(), b.clone()]));
        run("tensordot", || ops::tensordot(&a, &b, &[ax], &[ax2]));
        run("astype", || a.astype(db));
        run("clip", || ops::clip(&a, Some(&b), None));
        run("isclose", || ops::isclose(&a, &b, 1e-5, 1e-8, true));
        run("arange", || ops::arange(k as f64, ax as f64, ax2 as f64, da));
        run("linspace", || ops::linspace(k as f64, ax as f64, n, da));
        run("eye", || ops::eye(n, Some(k.unsigned_abs()), ax, da));
        run("full", || ops::full(&sa, k as f64, db));
    }
}
