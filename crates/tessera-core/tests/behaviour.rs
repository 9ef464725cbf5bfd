//! Behaviour tests: memory accounting and limits, async evaluation, error messages, donation,
//! wide graphs, printing and streams.
//!
//! Memory limits and counters are process-wide, so every test here takes `LOCK` and the tests of
//! this binary run one at a time.

use std::sync::{Mutex, MutexGuard};
use tessera_core::ops::{self, Axes};
use tessera_core::{
    Array, Device, DeviceType, Dtype, Error, Stream, active_memory, async_eval, default_stream,
    eval, peak_memory, reset_peak_memory, set_memory_limit, with_stream,
};

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const MB: usize = 1 << 20;

fn iota_f32(n: usize) -> Array {
    let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
    Array::from_slice(&v, &[n]).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

#[test]
fn memory_limit_accounting_and_recovery() {
    let _g = serial();
    let n = 2 * MB; // 2M f32 = 8 MB per array
    let base = active_memory();

    // Accounting: a live 8 MB array shows in active and peak; dropping it releases it.
    let a = iota_f32(n);
    let b = ops::full(&[n], 1.0, Dtype::F32)
        .unwrap()
        .astype(Dtype::F32)
        .unwrap();
    let b = ops::contiguous(&b).unwrap();
    b.eval().unwrap();
    let with_ab = active_memory();
    assert!(
        with_ab >= base + 2 * n * 4,
        "active {with_ab} should include two 8 MB arrays over {base}"
    );
    assert!(peak_memory() >= with_ab);
    let extra = iota_f32(n);
    assert!(active_memory() >= with_ab + n * 4);
    drop(extra);
    assert!(
        active_memory() <= with_ab + MB,
        "dropping an array frees its bytes: {} vs {with_ab}",
        active_memory()
    );

    // Limit: the next 8 MB allocation fails at eval, not at graph building.
    let old = set_memory_limit(active_memory() + MB);
    let c = ops::add(&a, &b).unwrap(); // building is fine
    let neg = ops::negative(&a).unwrap();
    // concatenate takes its first input (an intermediate held only by it) by donation, then fails to
    // allocate its output: the donated input must be put back for the retry below.
    let cat = ops::concatenate(
        &[
            ops::multiply(&a, &Array::scalar(1.0f32)).unwrap(),
            b.clone(),
        ],
        0,
    )
    .unwrap();
    let err = c.eval().unwrap_err();
    match &err {
        Error::OutOfMemory {
            requested, limit, ..
        } => {
            assert!(*requested >= n * 4, "{err}");
            assert!(*limit < with_ab + 2 * MB, "{err}");
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("out of memory"), "{msg}");
    assert!(
        msg.contains("set_memory_limit") && msg.contains("clear_cache"),
        "the message should say what to do: {msg}"
    );
    assert!(!c.is_evaluated());
    assert!(matches!(neg.eval(), Err(Error::OutOfMemory { .. })));
    assert!(matches!(cat.eval(), Err(Error::OutOfMemory { .. })));
    // Retrying under the same limit fails the same way (the graph is intact).
    assert!(matches!(c.eval(), Err(Error::OutOfMemory { .. })));
    // Small work still runs under the limit: the process stays usable.
    let small = ops::add(&Array::scalar(1.0f32), &Array::scalar(2.0f32)).unwrap();
    assert_eq!(small.item::<f32>().unwrap(), 3.0);

    // Raise the limit: the SAME arrays now evaluate, with the right values.
    set_memory_limit(old);
    let cv = c.to_vec::<f32>().unwrap();
    assert_eq!(cv.len(), n);
    assert!(cv.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0));
    let nv = neg.to_vec::<f32>().unwrap();
    assert!(nv.iter().enumerate().all(|(i, &v)| v == -(i as f32)));
    let catv = cat.to_vec::<f32>().unwrap();
    assert_eq!(catv.len(), 2 * n);
    assert!(catv[..n].iter().enumerate().all(|(i, &v)| v == i as f32));
    assert!(catv[n..].iter().all(|&v| v == 1.0));

    // A limit below what one eval needs, when the intermediate was donated into a later
    // consumer that then fails: the intermediate's data is restored, so the retry is right.
    let lim = set_memory_limit(active_memory() + 10 * MB);
    let t = ops::exp(&ops::multiply(&a, &Array::scalar(0.0f32)).unwrap()).unwrap(); // 8 MB, ones
    let big = ops::concatenate(&[t, b.clone()], 0).unwrap(); // needs 16 MB more
    assert!(matches!(big.eval(), Err(Error::OutOfMemory { .. })));
    set_memory_limit(lim);
    let bv = big.to_vec::<f32>().unwrap();
    assert!(
        bv.iter().all(|&v| v == 1.0),
        "retry after OOM gives wrong values"
    );

    // Peak tracks the high-water mark; reset brings it down to active.
    drop((c, neg, cat, big, cv, nv, catv, bv));
    reset_peak_memory();
    let p0 = peak_memory();
    assert!(p0 >= active_memory());
    let tmp = iota_f32(n);
    assert!(peak_memory() >= p0 + n * 4 || peak_memory() >= active_memory());
    let before_drop = active_memory();
    drop(tmp);
    assert!(active_memory() + n * 4 <= before_drop + MB);
    assert!(peak_memory() >= before_drop);

    drop((a, b));
    assert!(
        active_memory() <= base + MB,
        "everything dropped: active {} vs start {base}",
        active_memory()
    );
}

#[test]
fn oom_in_the_middle_of_a_graph_keeps_earlier_results_usable() {
    let _g = serial();
    let n = 2 * MB;
    let a = iota_f32(n);
    let s1 = ops::add(&a, &Array::scalar(1.0f32)).unwrap(); // user holds it: not donated
    let s2 = ops::multiply(&s1, &Array::scalar(2.0f32)).unwrap();
    let s3 = ops::concatenate(&[s2.clone(), s1.clone()], 0).unwrap();
    // Room for s1 and s2 but not s3.
    let old = set_memory_limit(active_memory() + 2 * n * 4 + 2 * MB);
    let r = eval(std::slice::from_ref(&s3));
    set_memory_limit(old);
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
    let v3 = s3.to_vec::<f32>().unwrap();
    assert_eq!(v3.len(), 2 * n);
    for i in [0, 1, n - 1] {
        assert_eq!(v3[i], 2.0 * (i as f32 + 1.0));
        assert_eq!(v3[n + i], i as f32 + 1.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Donation and memory reuse
// ---------------------------------------------------------------------------------------------

/// Element-wise ops that write into a donated input (unary, binary with the left, right or both
/// operands donated, and a scalar on either side) against the same ops on inputs the test holds,
/// which are never donated. The in-place loops are separate code (they read through the output
/// pointer so that they vectorise), over lengths that leave a vector tail.
#[test]
fn in_place_element_wise_ops_match_out_of_place() {
    let _g = serial();
    let n = 4099;
    let base: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    let other: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() + 1.5).collect();
    let x = || Array::from_slice(&base, &[n]).unwrap();
    let y = || Array::from_slice(&other, &[n]).unwrap();
    // A fresh intermediate (donatable: nothing else holds it) holding the same values as x or y.
    let fresh = |a: Array| ops::multiply(&a, &Array::scalar(1.0f32)).unwrap();
    let half = Array::scalar(0.5f32);
    type Case = (&'static str, fn(&Array, &Array, &Array) -> Array);
    let cases: [Case; 6] = [
        ("tanh", |a, _, _| ops::tanh(a).unwrap()),
        ("a - b", |a, b, _| ops::subtract(a, b).unwrap()),
        ("b - a", |a, b, _| ops::subtract(b, a).unwrap()),
        ("a * a", |a, _, _| ops::multiply(a, a).unwrap()),
        ("a / 0.5", |a, _, h| ops::divide(a, h).unwrap()),
        ("0.5 - a", |a, _, h| ops::subtract(h, a).unwrap()),
    ];
    for (name, f) in cases {
        let (xh, yh) = (x(), y());
        let want = f(&xh, &yh, &half).to_vec::<f32>().unwrap();
        // Donated left operand (and right for "b - a", where it is the second argument).
        let got = f(&fresh(x()), &y(), &half).to_vec::<f32>().unwrap();
        assert_eq!(got, want, "{name} with the first operand donated");
        let got = f(&x(), &fresh(y()), &half).to_vec::<f32>().unwrap();
        assert_eq!(got, want, "{name} with the second operand donated");
    }
}

#[test]
fn donation_gives_right_values() {
    let _g = serial();
    let p = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap();
    let b = Array::from_slice(&[10.0f32, 20.0, 30.0, 40.0], &[4]).unwrap();
    // `a` is an intermediate used once: its buffer may be reused by `x`.
    let a = ops::multiply(&p, &Array::scalar(2.0f32)).unwrap();
    let x = &a + &b;
    drop(a);
    assert_eq!(x.to_vec::<f32>().unwrap(), vec![12.0, 24.0, 36.0, 48.0]);
    // The inputs the caller holds are never written.
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![10.0, 20.0, 30.0, 40.0]);

    // Same intermediate on both sides.
    let a = ops::multiply(&p, &Array::scalar(2.0f32)).unwrap();
    let y = ops::add(&a, &a).unwrap();
    drop(a);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.0, 8.0, 12.0, 16.0]);

    // One intermediate, two consumers in the same eval.
    let a = ops::multiply(&p, &Array::scalar(2.0f32)).unwrap();
    let u = ops::add(&a, &Array::scalar(1.0f32)).unwrap();
    let w = ops::multiply(&a, &Array::scalar(3.0f32)).unwrap();
    drop(a);
    eval(&[u.clone(), w.clone()]).unwrap();
    assert_eq!(u.to_vec::<f32>().unwrap(), vec![3.0, 5.0, 7.0, 9.0]);
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![6.0, 12.0, 18.0, 24.0]);

    // A view of the intermediate is evaluated first and shares its buffer: the later consumer
    // must not write into that buffer.
    let a = ops::multiply(&p, &Array::scalar(2.0f32)).unwrap();
    let v = ops::reshape(&a, &[2, 2]).unwrap();
    let r = ops::slice_opt(&a, &[(Some(3), None, -1)]).unwrap(); // a[3::-1]
    let z = ops::negative(&a).unwrap();
    let q = ops::add(&a, &Array::scalar(100.0f32)).unwrap();
    drop(a);
    eval(&[v.clone(), r.clone()]).unwrap();
    eval(&[z.clone()]).unwrap();
    q.eval().unwrap();
    assert_eq!(v.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0, 8.0]);
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![8.0, 6.0, 4.0, 2.0]);
    assert_eq!(z.to_vec::<f32>().unwrap(), vec![-2.0, -4.0, -6.0, -8.0]);
    assert_eq!(q.to_vec::<f32>().unwrap(), vec![102.0, 104.0, 106.0, 108.0]);

    // slice_update and scatter on an intermediate (may be done in place).
    let a = ops::multiply(&p, &Array::scalar(2.0f32)).unwrap();
    let view = ops::slice(&a, &[0], &[2], &[1]).unwrap();
    let su = ops::slice_update(&a, &Array::scalar(0.0f32), &[1], &[3], &[1]).unwrap();
    drop(a);
    view.eval().unwrap();
    assert_eq!(su.to_vec::<f32>().unwrap(), vec![2.0, 0.0, 0.0, 8.0]);
    assert_eq!(view.to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
    let a = ops::multiply(&p, &Array::scalar(2.0f32)).unwrap();
    let idx = Array::from_slice(&[0i32, 0, 3], &[3]).unwrap();
    let vals = Array::from_slice(&[1.0f32, 1.0, 1.0], &[3]).unwrap();
    let sc = ops::scatter_add_along_axis(&a, &idx, &vals, 0).unwrap();
    drop(a);
    assert_eq!(sc.to_vec::<f32>().unwrap(), vec![4.0, 4.0, 6.0, 9.0]);
}

#[test]
fn long_elementwise_chain_reuses_memory() {
    let _g = serial();
    let n = 4 * MB; // 4M f32 = 16 MB
    let nbytes = n * 4;
    let x = iota_f32(n);
    let base = active_memory();
    reset_peak_memory();
    let mut y = x.clone();
    for i in 0..100 {
        y = if i % 2 == 0 {
            ops::add(&y, &Array::scalar(2.0f32)).unwrap()
        } else {
            ops::subtract(&y, &Array::scalar(1.0f32)).unwrap()
        };
    }
    // Building the graph allocates nothing big.
    assert!(peak_memory() < base + MB, "graph building allocated");
    y.eval().unwrap();
    let growth = peak_memory() - base;
    assert!(
        growth <= 3 * nbytes,
        "100 chained ops on a 16 MB array grew peak memory by {} MB (more than 3 arrays)",
        growth / MB
    );
    let v = y.to_vec::<f32>().unwrap();
    assert!(
        v.iter().enumerate().all(|(i, &e)| e == i as f32 + 50.0),
        "wrong values after chain"
    );
    // The source array is not modified by donation.
    let xv = x.to_vec::<f32>().unwrap();
    assert!(xv.iter().enumerate().all(|(i, &e)| e == i as f32));
    drop((v, xv));
    // After evaluation only the result remains alive from the chain.
    assert!(active_memory() <= base + nbytes + MB);
    drop(y);
    assert!(active_memory() <= base + MB);

    // Unary chains too (exp/log keep the dtype).
    reset_peak_memory();
    let base = active_memory();
    let mut z = ops::multiply(&x, &Array::scalar(0.0f32)).unwrap();
    for _ in 0..50 {
        z = ops::log(&ops::exp(&z).unwrap()).unwrap();
    }
    z.eval().unwrap();
    assert!(
        peak_memory() - base <= 3 * nbytes,
        "unary chain kept intermediates alive"
    );
    assert_eq!(
        ops::max(&ops::abs(&z).unwrap(), Axes::All, false)
            .unwrap()
            .item::<f32>()
            .unwrap(),
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// Async evaluation
// ---------------------------------------------------------------------------------------------

#[test]
fn async_eval_gives_right_values() {
    let _g = serial();
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let m = ops::matmul(&a, &a).unwrap();
    async_eval(std::slice::from_ref(&m));
    assert_eq!(m.to_vec::<f32>().unwrap(), vec![7.0, 10.0, 15.0, 22.0]);

    // Many async evals interleaved with evals over a shared subgraph.
    let x = iota_f32(10_000);
    let shared = ops::exp(&ops::multiply(&x, &Array::scalar(1e-4f32)).unwrap()).unwrap();
    let mut outs = vec![];
    for i in 0..200 {
        let o = ops::sum(
            &ops::multiply(&shared, &Array::scalar(i as f32)).unwrap(),
            Axes::All,
            false,
        )
        .unwrap();
        if i % 3 == 0 {
            o.eval().unwrap();
        } else {
            async_eval(std::slice::from_ref(&o));
        }
        outs.push(o);
    }
    let s: f64 = (0..10_000).map(|k| ((k as f64) * 1e-4).exp()).sum();
    for (i, o) in outs.iter().enumerate() {
        let v = o.item::<f32>().unwrap() as f64;
        let want = s * i as f64;
        assert!(
            (v - want).abs() <= 1e-4 * want.abs() + 1e-3,
            "{i}: {v} vs {want}"
        );
    }

    // From several threads at once, graphs sharing a node.
    let base = ops::add(&iota_f32(1000), &Array::scalar(1.0f32)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let base = base.clone();
            std::thread::spawn(move || {
                let mut v = vec![];
                for k in 0..50 {
                    let o = ops::sum(
                        &ops::multiply(&base, &Array::scalar((t * 100 + k) as f32)).unwrap(),
                        Axes::All,
                        false,
                    )
                    .unwrap();
                    if k % 2 == 0 {
                        async_eval(std::slice::from_ref(&o));
                    }
                    v.push((t * 100 + k, o));
                }
                v.into_iter()
                    .map(|(m, o)| (m, o.item::<f32>().unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (m, v) in h.join().unwrap() {
            let want = 500_500.0 * m as f64;
            assert!(
                (v as f64 - want).abs() <= 1e-6 * want,
                "multiplier {m}: {v} vs {want}"
            );
        }
    }

    // An async eval that fails reports its error on the next eval, and nothing panics.
    let bad = ops::take(
        &iota_f32(5),
        &Array::from_slice(&[9i32], &[1]).unwrap(),
        None,
    )
    .unwrap();
    async_eval(std::slice::from_ref(&bad));
    tessera_core::synchronize().unwrap();
    assert!(bad.eval().is_err());
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn errors_name_the_op_and_shapes_at_call_time() {
    let _g = serial();
    let z = |s: &[usize]| ops::zeros(s, Dtype::F32).unwrap();

    let e = ops::matmul(&z(&[2, 3]), &z(&[4, 5])).unwrap_err();
    assert!(
        e.to_string()
            .contains("[matmul] inner dimensions differ: (2, 3) @ (4, 5)"),
        "{e}"
    );
    let e = ops::matmul(&z(&[3]), &z(&[4])).unwrap_err().to_string();
    assert!(
        e.contains("[matmul]") && e.contains("(3,)") && e.contains("(4,)"),
        "{e}"
    );
    let e = ops::matmul(&z(&[2, 2, 3]), &z(&[3, 3, 4]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("matmul") && e.contains("broadcast"), "{e}");

    let e = ops::add(&z(&[2, 3]), &z(&[3, 2])).unwrap_err();
    assert!(matches!(&e, Error::Broadcast { op: "add", a, b } if a == &[2, 3] && b == &[3, 2]));
    let m = e.to_string();
    assert!(
        m.contains("[add]") && m.contains("cannot be broadcast"),
        "{m}"
    );
    assert!(m.contains("2, 3") && m.contains("3, 2"), "{m}");
    let m = ops::broadcast_to(&z(&[3]), &[4]).unwrap_err().to_string();
    assert!(m.contains("broadcast_to"), "{m}");
    let m = ops::where_(&z(&[2]), &z(&[3]), &z(&[1]))
        .unwrap_err()
        .to_string();
    assert!(m.contains("[where]"), "{m}");

    let m = ops::sum(&z(&[2, 3]), 2, false).unwrap_err().to_string();
    assert_eq!(
        m,
        "[sum] axis 2 is out of bounds for an array of dimension 2"
    );
    let m = ops::sum(&z(&[2, 3]), -3, false).unwrap_err().to_string();
    assert!(m.contains("axis -3 is out of bounds"), "{m}");
    let m = ops::argmax(&z(&[2]), Some(1), false)
        .unwrap_err()
        .to_string();
    assert!(m.starts_with("[argmax]"), "{m}");
    let m = ops::transpose(&z(&[2, 3]), Some(&[0, 0]))
        .unwrap_err()
        .to_string();
    assert!(m.starts_with("[transpose]"), "{m}");
    let m = ops::sum(&z(&[2, 3]), [0, 0], false)
        .unwrap_err()
        .to_string();
    assert!(m.contains("repeated axis"), "{m}");

    let m = ops::reshape(&z(&[2, 3]), &[4]).unwrap_err().to_string();
    assert_eq!(
        m,
        "[reshape] cannot reshape array of shape (2, 3) into shape (4,)"
    );
    let m = ops::concatenate(&[z(&[2, 3]), z(&[2, 4])], 0)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("[concatenate]") && m.contains("(2, 3)") && m.contains("(2, 4)"),
        "{m}"
    );
    let m = ops::split(&z(&[5]), ops::SplitAt::Sections(2), 0)
        .unwrap_err()
        .to_string();
    assert!(m.starts_with("[split]"), "{m}");
    let m = ops::slice(&z(&[5]), &[0], &[5], &[0])
        .unwrap_err()
        .to_string();
    assert!(m.contains("step cannot be zero"), "{m}");
    let m = ops::bitwise_and(&z(&[2]), &z(&[2]))
        .unwrap_err()
        .to_string();
    assert!(
        m.starts_with("[bitwise_and]") && m.contains("float32"),
        "{m}"
    );
    let m = ops::take(&z(&[2]), &z(&[1]), None).unwrap_err().to_string();
    assert!(m.starts_with("[take]") && m.contains("integers"), "{m}");
    let m = Array::from_slice(&[1.0f32, 2.0], &[3])
        .unwrap_err()
        .to_string();
    assert!(m.contains("(3,)"), "{m}");
    let m = iota_f32(4).item::<f32>().unwrap_err().to_string();
    assert!(m.starts_with("[item]") && m.contains("(4,)"), "{m}");

    // Operators panic with the op's message.
    let p = std::panic::catch_unwind(|| &z(&[2, 3]) + &z(&[3, 2])).unwrap_err();
    let pm = p.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(pm.contains("[add]"), "{pm}");
}

#[test]
fn out_of_range_indices_error_at_eval() {
    let _g = serial();
    let a = iota_f32(5);
    for (bad, name) in [(7i32, "index 7"), (-6, "index -6"), (5, "index 5")] {
        let idx = Array::from_slice(&[0i32, bad, 1], &[3]).unwrap();
        let t = ops::take(&a, &idx, Some(0)).expect("take checks indices at eval");
        let e = t.eval().unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("[take]") && m.contains(name) && m.contains("size 5"),
            "{m}"
        );
        assert!(t.to_vec::<f32>().is_err());
    }
    // Through the flattened path and a 2-D source.
    let a2 = ops::reshape(&iota_f32(6), &[2, 3]).unwrap();
    let idx = Array::from_slice(&[6i64], &[1]).unwrap();
    let m = ops::take(&a2, &idx, None)
        .unwrap()
        .eval()
        .unwrap_err()
        .to_string();
    assert!(m.contains("index 6") && m.contains("size 6"), "{m}");
    let idx = Array::from_slice(&[3u32], &[1]).unwrap();
    let m = ops::take(&a2, &idx, Some(1))
        .unwrap()
        .eval()
        .unwrap_err()
        .to_string();
    assert!(m.contains("index 3") && m.contains("size 3"), "{m}");
    // Huge indices do not wrap into range.
    let idx = Array::from_slice(&[i64::MIN, i64::MAX], &[2]).unwrap();
    assert!(ops::take(&a, &idx, None).unwrap().eval().is_err());
    let idx = Array::from_slice(&[u32::MAX], &[1]).unwrap();
    assert!(ops::take(&a, &idx, None).unwrap().eval().is_err());

    // take_along_axis and the scatters.
    let idx = Array::from_slice(&[0i32, 3, 1, -4], &[2, 2]).unwrap();
    let m = ops::take_along_axis(&a2, &idx, Some(1))
        .unwrap()
        .eval()
        .unwrap_err()
        .to_string();
    assert!(m.contains("index 3") || m.contains("index -4"), "{m}");
    let idx = Array::from_slice(&[0i32, 9], &[2]).unwrap();
    let vals = Array::from_slice(&[1.0f32, 1.0], &[2]).unwrap();
    let m = ops::put_along_axis(&a, &idx, &vals, 0)
        .unwrap()
        .eval()
        .unwrap_err()
        .to_string();
    assert!(m.contains("index 9"), "{m}");
    let m = ops::scatter_add(&a, &idx, &vals, 0)
        .unwrap()
        .eval()
        .unwrap_err()
        .to_string();
    assert!(m.contains("index 9"), "{m}");
    // The source is intact and the process usable.
    assert_eq!(a.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    let ok = ops::take(&a, &Array::from_slice(&[-1i32, 0], &[2]).unwrap(), None).unwrap();
    assert_eq!(ok.to_vec::<f32>().unwrap(), vec![4.0, 0.0]);
}

// ---------------------------------------------------------------------------------------------
// Wide graphs
// ---------------------------------------------------------------------------------------------

#[test]
fn wide_graph_sum_of_ten_thousand_arrays() {
    let _g = serial();
    let n = 10_000;
    let arrays: Vec<Array> = (0..n)
        .map(|i| Array::from_slice(&[i as i64, 1, 2 * i as i64], &[3]).unwrap())
        .collect();
    let want = [(n * (n - 1) / 2) as i64, n as i64, (n * (n - 1)) as i64];
    // A left fold (10k leaves hanging off a 10k chain).
    let mut acc = ops::zeros(&[3], Dtype::I64).unwrap();
    for a in &arrays {
        acc = ops::add(&acc, a).unwrap();
    }
    assert_eq!(acc.to_vec::<i64>().unwrap(), want);
    // A balanced tree.
    let mut level = arrays.clone();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|c| {
                if c.len() == 2 {
                    ops::add(&c[0], &c[1]).unwrap()
                } else {
                    c[0].clone()
                }
            })
            .collect();
    }
    assert_eq!(level[0].to_vec::<i64>().unwrap(), want);
    // One node with 10k inputs.
    let st = ops::stack(&arrays, 0).unwrap();
    assert_eq!(st.shape(), &[n, 3]);
    let s = ops::sum(&st, 0, false).unwrap();
    assert_eq!(s.to_vec::<i64>().unwrap(), want);
    // Evaluate 10k outputs at once.
    let outs: Vec<Array> = arrays
        .iter()
        .map(|a| ops::multiply(a, &Array::scalar(2i64)).unwrap())
        .collect();
    eval(&outs).unwrap();
    assert!(outs.iter().all(|o| o.is_evaluated()));
    assert_eq!(
        outs[n - 1].to_vec::<i64>().unwrap(),
        vec![2 * (n as i64 - 1), 2, 4 * (n as i64 - 1)]
    );
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

#[test]
fn display_matches_numpy() {
    let _g = serial();
    let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
    assert_eq!(
        format!("{a}"),
        "array([[1, 2],\n       [3, 4]], dtype=int32)"
    );
    let a = Array::from_slice(&[1i32, -20, 300], &[3]).unwrap();
    assert_eq!(format!("{a}"), "array([  1, -20, 300], dtype=int32)");
    let a = Array::scalar(7i64);
    assert_eq!(format!("{a}"), "array(7, dtype=int64)");
    let a = Array::from_slice(&[0u8; 0], &[0]).unwrap();
    assert_eq!(format!("{a}"), "array([], dtype=uint8)");
    let a = ops::reshape(&ops::arange(0.0, 8.0, 1.0, Dtype::I32).unwrap(), &[2, 2, 2]).unwrap();
    assert_eq!(
        format!("{a}"),
        "array([[[0, 1],\n        [2, 3]],\n\n       [[4, 5],\n        [6, 7]]], dtype=int32)"
    );
    // Debug prints the same.
    assert_eq!(format!("{a:?}"), format!("{a}"));

    // Floats: NumPy aligns on the decimal point and pads the fraction on the right:
    // np.array([1.5, 2.], dtype=np.float32) -> array([1.5, 2. ], dtype=float32)
    let f = Array::from_slice(&[1.5f32, 2.0], &[2]).unwrap();
    assert_eq!(format!("{f}"), "array([1.5, 2. ], dtype=float32)");
    let f = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    assert_eq!(format!("{f}"), "array([1., 2., 3.], dtype=float32)");
    let f = Array::from_slice(&[0.25f32, -10.5], &[2]).unwrap();
    assert_eq!(format!("{f}"), "array([  0.25, -10.5 ], dtype=float32)");
    let f = Array::from_slice(&[1.5f32, f32::INFINITY], &[2]).unwrap();
    assert_eq!(format!("{f}"), "array([1.5, inf], dtype=float32)");
    let f = Array::from_slice(&[1.0f32, f32::NAN, f32::NEG_INFINITY], &[3]).unwrap();
    assert_eq!(format!("{f}"), "array([  1.,  nan, -inf], dtype=float32)");
    let f = Array::from_slice(&[0.1f64, 2.0], &[1, 2]).unwrap();
    assert_eq!(format!("{f}"), "array([[0.1, 2. ]], dtype=float64)");
    let f = Array::scalar(2.5f32);
    assert_eq!(format!("{f}"), "array(2.5, dtype=float32)");

    // Large arrays are summarised with the first and last three entries per axis.
    let big = ops::arange(0.0, 2000.0, 1.0, Dtype::I32).unwrap();
    assert_eq!(
        format!("{big}"),
        "array([   0,    1,    2, ..., 1997, 1998, 1999], dtype=int32)"
    );
    let big2 = ops::reshape(
        &ops::arange(0.0, 2000.0, 1.0, Dtype::I32).unwrap(),
        &[40, 50],
    )
    .unwrap();
    let s = format!("{big2}");
    assert!(s.contains("..."), "{s}");
    assert_eq!(s.lines().count(), 7, "3 rows, '...', 3 rows: {s}");
    assert!(
        s.starts_with("array([[   0,    1,    2, ...,   47,   48,   49],"),
        "{s}"
    );
    assert!(
        s.ends_with("[1950, 1951, 1952, ..., 1997, 1998, 1999]], dtype=int32)"),
        "{s}"
    );
    // 1000 elements exactly is not summarised (NumPy's threshold).
    let k = format!("{}", ops::arange(0.0, 1000.0, 1.0, Dtype::I32).unwrap());
    assert!(!k.contains("..."));
}

#[test]
fn display_bool_and_lazy_arrays() {
    let _g = serial();
    // Printing evaluates a lazy array.
    let a = ops::add(
        &Array::scalar(1i32),
        &Array::from_slice(&[1i32, 2], &[2]).unwrap(),
    )
    .unwrap();
    assert!(!a.is_evaluated());
    assert_eq!(format!("{a}"), "array([2, 3], dtype=int32)");
    // An evaluation error prints instead of panicking.
    let bad = ops::take(
        &iota_f32(2),
        &Array::from_slice(&[5i32], &[1]).unwrap(),
        None,
    )
    .unwrap();
    let s = format!("{bad}");
    assert!(s.contains("index 5"), "{s}");
    let b = Array::from_slice(&[true, false], &[2]).unwrap();
    let s = format!("{b}");
    assert!(s.ends_with(", dtype=bool)"), "{s}");
    println!("bool prints as {s}");
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

#[test]
fn streams_and_gpu_fallback() {
    let _g = serial();
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    assert_eq!(default_stream(), Stream::CPU);
    let b = with_stream(Stream::CPU, || ops::multiply(&a, &a)).unwrap();
    assert_eq!(b.stream(), Stream::CPU);
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![1.0, 4.0, 9.0]);

    // No GPU backend is registered in this binary: GPU streams compute on the CPU.
    let gpu = Stream::default_for(Device::gpu(0));
    let c = with_stream(gpu, || {
        assert_eq!(default_stream(), gpu);
        let x = ops::exp(&a).unwrap();
        ops::sum(&x, Axes::All, false).unwrap()
    });
    assert_eq!(
        default_stream(),
        Stream::CPU,
        "with_stream restores the default"
    );
    assert_eq!(c.stream().device.kind, DeviceType::Gpu);
    let want = 1f32.exp() + 2f32.exp() + 3f32.exp();
    assert!((c.item::<f32>().unwrap() - want).abs() < 1e-5);
    // Mixed graphs: a GPU-stream node feeding a CPU-stream node.
    let d = with_stream(gpu, || ops::add(&a, &a)).unwrap();
    let e = ops::multiply(&d, &Array::scalar(10.0f32)).unwrap();
    assert_eq!(e.stream(), Stream::CPU);
    assert_eq!(e.to_vec::<f32>().unwrap(), vec![20.0, 40.0, 60.0]);

    // The default is per thread, and restored even when `f` panics.
    let r = std::panic::catch_unwind(|| with_stream(gpu, || panic!("boom")));
    assert!(r.is_err());
    assert_eq!(default_stream(), Stream::CPU);
    let other = std::thread::spawn(move || with_stream(gpu, || default_stream()))
        .join()
        .unwrap();
    assert_eq!(other, gpu);
    assert_eq!(default_stream(), Stream::CPU);
    let prev = tessera_core::set_default_device(Device::gpu(1));
    let f = ops::negative(&a).unwrap();
    tessera_core::set_default_stream(prev);
    assert_eq!(f.stream().device, Device::gpu(1));
    assert_eq!(f.to_vec::<f32>().unwrap(), vec![-1.0, -2.0, -3.0]);
}

/// An input held by nothing but its consumer gives its buffer to the output (in-place update),
/// as a KV cache or an optimizer step relies on; a view still alive elsewhere prevents it.
#[test]
fn sole_owner_inputs_are_updated_in_place() {
    let _g = serial();
    let mut buf = ops::contiguous(&ops::zeros(&[1, 3, 64, 8], Dtype::F32).unwrap()).unwrap();
    buf.eval().unwrap();
    let first = buf.data().unwrap().buffer.as_ptr() as usize;
    for i in 0..4isize {
        let upd = ops::full(&[1, 3, 1, 8], (i + 1) as f64, Dtype::F32).unwrap();
        let b = [
            (None, None, 1),
            (None, None, 1),
            (Some(i), Some(i + 1), 1),
            (None, None, 1),
        ];
        buf = ops::slice_update_opt(&buf, &upd, &b).unwrap();
        let s = ops::sum(
            &ops::slice_axis(&buf, 2, 0, (i + 1) as usize).unwrap(),
            ops::Axes::All,
            false,
        )
        .unwrap();
        let want: f32 = (1..=i + 1).map(|v| v as f32 * 24.0).sum();
        assert_eq!(s.item::<f32>().unwrap(), want);
        assert_eq!(
            buf.data().unwrap().buffer.as_ptr() as usize,
            first,
            "step {i} copied"
        );
    }
    // A live view of the old value must keep it intact: the update copies instead.
    let keep = ops::slice_axis(&buf, 2, 0, 1).unwrap();
    let upd = ops::full(&[1, 3, 1, 8], 9.0, Dtype::F32).unwrap();
    let b = [
        (None, None, 1),
        (None, None, 1),
        (Some(0), Some(1), 1),
        (None, None, 1),
    ];
    let newer = ops::slice_update_opt(&buf, &upd, &b).unwrap();
    newer.eval().unwrap();
    assert_eq!(
        ops::sum(&keep, ops::Axes::All, false)
            .unwrap()
            .item::<f32>()
            .unwrap(),
        24.0
    );
    assert_ne!(newer.data().unwrap().buffer.as_ptr() as usize, first);
}

/// An update of another dtype is converted as it is written, as `astype` converts, still in
/// place, and its gradient comes back in its own dtype (a KV cache stores f32 keys as f16).
#[test]
fn slice_update_converts_an_update_of_another_dtype() {
    // Serial: a gradient being traced turns donation off process-wide.
    let _g = serial();
    let mut buf = ops::contiguous(&ops::zeros(&[2, 4, 3], Dtype::F16).unwrap()).unwrap();
    buf.eval().unwrap();
    let first = buf.data().unwrap().buffer.as_ptr() as usize;
    let v: Vec<f32> = (0..6).map(|i| 1.0 / (3.0 + i as f32)).collect();
    let upd = Array::from_slice(&v, &[2, 1, 3]).unwrap();
    let b = [(None, None, 1), (Some(2), Some(3), 1), (None, None, 1)];
    buf = ops::slice_update_opt(&buf, &upd, &b).unwrap();
    assert_eq!(buf.dtype(), Dtype::F16);
    let got = ops::slice_axis(&buf, 1, 2, 3).unwrap();
    let want = upd.astype(Dtype::F16).unwrap();
    assert_eq!(
        got.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap(),
        want.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap()
    );
    assert_eq!(buf.data().unwrap().buffer.as_ptr() as usize, first);
    // d(sum(a with the window replaced)) / d(update) = 1 per element, as an f32 array.
    let g = tessera_core::transforms::grad(
        |xs: &[Array]| {
            let a = ops::zeros(&[2, 4, 3], Dtype::F16)?;
            let w = ops::slice_update_opt(&a, &xs[0], &b)?;
            ops::sum(&w.astype(Dtype::F32)?, ops::Axes::All, false)
        },
        std::slice::from_ref(&upd),
    )
    .unwrap();
    assert_eq!(g[0].dtype(), Dtype::F32);
    assert_eq!(g[0].to_vec::<f32>().unwrap(), vec![1.0; 6]);
}

/// The vectorised fast paths of `where` (everything contiguous, or x or y a broadcast value) and
/// of reductions over a leading axis (whole output rows accumulated at once, one loop per
/// operation), against values computed element by element here.
#[test]
fn where_and_leading_axis_reductions_match_elementwise_values() {
    let _g = serial();
    let (r, c) = (37, 133);
    let v: Vec<f32> = (0..r * c)
        .map(|i| ((i * 7919) % 1009) as f32 / 100.0 - 5.0)
        .collect();
    let w: Vec<f32> = (0..r * c)
        .map(|i| ((i * 104_729) % 997) as f32 / 50.0 - 9.0)
        .collect();
    let x = Array::from_slice(&v, &[r, c]).unwrap();
    let y = Array::from_slice(&w, &[r, c]).unwrap();
    let cond = ops::greater(&x, &Array::scalar(0.0f32)).unwrap();
    let s = Array::scalar(0.25f32);
    let pick = |t: bool, a: f32, b: f32| if t { a } else { b };
    let cases: [(&str, Array, Vec<f32>); 3] = [
        (
            "x, y",
            ops::where_(&cond, &x, &y).unwrap(),
            (0..r * c).map(|i| pick(v[i] > 0.0, v[i], w[i])).collect(),
        ),
        (
            "x, scalar",
            ops::where_(&cond, &x, &s).unwrap(),
            (0..r * c).map(|i| pick(v[i] > 0.0, v[i], 0.25)).collect(),
        ),
        (
            "scalar, y",
            ops::where_(&cond, &s, &y).unwrap(),
            (0..r * c).map(|i| pick(v[i] > 0.0, 0.25, w[i])).collect(),
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got.to_vec::<f32>().unwrap(), want, "where({name})");
    }
    let column = |f: fn(f32, f32) -> f32, init: f32| -> Vec<f32> {
        (0..c)
            .map(|j| (0..r).fold(init, |a, i| f(a, v[i * c + j])))
            .collect()
    };
    let reduce = |f: fn(&Array, Axes, bool) -> tessera_core::Result<Array>| {
        f(&x, Axes::Some(vec![0]), false)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    let close = |a: &[f32], b: &[f32], what: &str| {
        for (j, (p, q)) in a.iter().zip(b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-4 * q.abs().max(1.0),
                "{what} column {j}: {p} vs {q}"
            );
        }
    };
    close(&reduce(ops::sum), &column(|a, b| a + b, 0.0), "sum");
    close(&reduce(ops::prod), &column(|a, b| a * b, 1.0), "prod");
    assert_eq!(reduce(ops::max), column(f32::max, f32::NEG_INFINITY), "max");
    assert_eq!(reduce(ops::min), column(f32::min, f32::INFINITY), "min");
}

/// Indices with more rows than the array has (a size-1 dim they broadcast against) write the
/// same row again, as NumPy does; before, the kernel walked past the end of the output and
/// corrupted the heap (found by `no_panics` under valgrind).
#[test]
fn scatters_along_a_broadcast_size_one_dim_stay_inside_the_array() {
    let _g = serial();
    let a = Array::from_slice(&[0i32; 3], &[1, 3]).unwrap();
    let idx = Array::from_slice(&[2i32, 0], &[2, 1]).unwrap();
    let vals = Array::from_slice(&[5i32, 7], &[2, 1]).unwrap();
    // np.put_along_axis(np.zeros((1, 3)), [[2], [0]], [[5], [7]], 1) -> [[7, 0, 5]]
    let p = ops::put_along_axis(&a, &idx, &vals, 1).unwrap();
    assert_eq!(p.shape(), &[1, 3]);
    assert_eq!(p.to_vec::<i32>().unwrap(), vec![7, 0, 5]);
    // Adding accumulates every write: 5 at index 2 and 7 at index 0, then a second pass.
    let idx = Array::from_slice(&[2i32, 2, 0], &[3, 1]).unwrap();
    let vals = Array::from_slice(&[5i32, 1, 7], &[3, 1]).unwrap();
    let s = ops::scatter_add_along_axis(&a, &idx, &vals, 1).unwrap();
    assert_eq!(s.to_vec::<i32>().unwrap(), vec![7, 0, 6]);
}
