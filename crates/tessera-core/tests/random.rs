//! Random numbers: reproducibility of keys and seeds, and statistical checks with fixed keys.
//!
//! Every statistical check uses a fixed key, so it is deterministic; the tolerances are still
//! set many standard errors wide, so a change of generator that stays correct keeps passing.
//! (The Threefry known-answer test lives next to the kernel in src/backend/cpu/random.rs.)

use tessera_core::ops::{self, Axes};
use tessera_core::random::{self, key};
use tessera_core::{Array, Dtype};

const N: usize = 1 << 20;

fn stats(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var)
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} +- {tol}"
    );
}

fn f64s(a: &Array) -> Vec<f64> {
    a.to_vec::<f64>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Reproducibility
// ---------------------------------------------------------------------------------------------

#[test]
fn same_key_same_numbers() {
    let k = key(42);
    let a = random::uniform(0.0, 1.0, &[1000], Dtype::F32, Some(&k)).unwrap();
    let b = random::uniform(0.0, 1.0, &[1000], Dtype::F32, Some(&k)).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    // An equal key built separately gives the same numbers too.
    let k2 = Array::from_slice(&[0u32, 42], &[2]).unwrap();
    let c = random::uniform(0.0, 1.0, &[1000], Dtype::F32, Some(&k2)).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap());
    for f in [
        |k: &Array| random::normal(&[257], Dtype::F32, 0.0, 1.0, Some(k)).unwrap(),
        |k: &Array| random::randint(-5, 5, &[257], Dtype::I32, Some(k)).unwrap(),
        |k: &Array| random::bits(&[257], Some(k)).unwrap(),
        |k: &Array| random::permutation(257, Some(k)).unwrap(),
        |k: &Array| random::truncated_normal(-1.0, 1.0, &[257], Dtype::F32, Some(k)).unwrap(),
    ] {
        assert_eq!(f64s(&f(&k)), f64s(&f(&k)));
        assert_ne!(f64s(&f(&k)), f64s(&f(&key(43))));
    }
}

#[test]
fn different_keys_different_numbers() {
    let keys = [key(0), key(1), key(1 << 32), key(u64::MAX), key(12345)];
    let outs: Vec<Vec<u32>> = keys
        .iter()
        .map(|k| {
            random::bits(&[64], Some(k))
                .unwrap()
                .to_vec::<u32>()
                .unwrap()
        })
        .collect();
    for i in 0..outs.len() {
        for j in 0..i {
            let same = outs[i].iter().zip(&outs[j]).filter(|(a, b)| a == b).count();
            assert!(same <= 1, "keys {i} and {j} share {same} of 64 words");
        }
    }
}

#[test]
fn bits_are_a_prefix_stable_stream() {
    // Element pairs come from counters, so a shorter request is a prefix of a longer one and the
    // shape does not change the stream.
    let k = key(7);
    let long = random::bits(&[1001], Some(&k))
        .unwrap()
        .to_vec::<u32>()
        .unwrap();
    for n in [0usize, 1, 2, 5, 1000] {
        let short = random::bits(&[n], Some(&k))
            .unwrap()
            .to_vec::<u32>()
            .unwrap();
        assert_eq!(short, long[..n], "n = {n}");
    }
    let m = random::bits(&[7, 11], Some(&k)).unwrap();
    assert_eq!(m.shape(), &[7, 11]);
    assert_eq!(m.to_vec::<u32>().unwrap(), long[..77]);
    // Roughly half the bits are set.
    let ones: u32 = long.iter().map(|w| w.count_ones()).sum();
    close(ones as f64 / (1001.0 * 32.0), 0.5, 0.02, "bit balance");
}

#[test]
fn split_keys_differ() {
    let k = key(2024);
    let ks = random::split(&k, 8).unwrap();
    assert_eq!(ks.shape(), &[8, 2]);
    assert_eq!(ks.dtype(), Dtype::U32);
    let words = ks.to_vec::<u32>().unwrap();
    let rows: Vec<[u32; 2]> = words.chunks(2).map(|c| [c[0], c[1]]).collect();
    let parent = k.to_vec::<u32>().unwrap();
    for i in 0..rows.len() {
        assert_ne!(rows[i].to_vec(), parent, "child {i} equals the parent key");
        for j in 0..i {
            assert_ne!(rows[i], rows[j], "children {i} and {j} are equal");
        }
    }
    // Splitting is deterministic.
    assert_eq!(
        random::split(&k, 8).unwrap().to_vec::<u32>().unwrap(),
        words
    );
    // Children give different streams from each other and from the parent.
    let child = |i: usize| ops::reshape(&ops::slice_axis(&ks, 0, i, i + 1).unwrap(), &[2]).unwrap();
    let s0 = random::uniform(0.0, 1.0, &[100], Dtype::F32, Some(&child(0))).unwrap();
    let s1 = random::uniform(0.0, 1.0, &[100], Dtype::F32, Some(&child(1))).unwrap();
    let sp = random::uniform(0.0, 1.0, &[100], Dtype::F32, Some(&k)).unwrap();
    let (v0, v1, vp) = (
        s0.to_vec::<f32>().unwrap(),
        s1.to_vec::<f32>().unwrap(),
        sp.to_vec::<f32>().unwrap(),
    );
    assert_ne!(v0, v1);
    assert_ne!(v0, vp);
    assert_ne!(v1, vp);
    // Split of a split.
    let g = random::split(&child(3), 2)
        .unwrap()
        .to_vec::<u32>()
        .unwrap();
    assert!(!words.chunks(2).any(|c| c == &g[..2] || c == &g[2..]));
    // A bad key is an error at the call.
    let bad = Array::from_slice(&[1u32, 2, 3], &[3]).unwrap();
    assert!(random::split(&bad, 2).is_err());
    assert!(random::uniform(0.0, 1.0, &[2], Dtype::F32, Some(&bad)).is_err());
    let badt = Array::from_slice(&[1i32, 2], &[2]).unwrap();
    assert!(random::bits(&[2], Some(&badt)).is_err());
}

/// The only test that uses the process-wide key (the others pass keys), so it cannot race.
#[test]
fn seed_makes_unkeyed_calls_reproducible() {
    let draw = || {
        let a = random::uniform(0.0, 1.0, &[50], Dtype::F32, None).unwrap();
        let b = random::normal(&[50], Dtype::F32, 0.0, 1.0, None).unwrap();
        let c = random::randint(0, 100, &[50], Dtype::I32, None).unwrap();
        (
            a.to_vec::<f32>().unwrap(),
            b.to_vec::<f32>().unwrap(),
            c.to_vec::<i32>().unwrap(),
        )
    };
    random::seed(11);
    let first = draw();
    let second = draw();
    assert_ne!(first.0, second.0, "consecutive unkeyed calls repeat");
    random::seed(11);
    assert_eq!(draw(), first);
    assert_eq!(draw(), second);
    random::seed(12);
    assert_ne!(draw().0, first.0);
    // Unevaluated unkeyed draws do not disturb the sequence's reproducibility.
    random::seed(11);
    let lazy: Vec<Array> = (0..1000)
        .map(|_| random::uniform(0.0, 1.0, &[1], Dtype::F32, None).unwrap())
        .collect();
    random::seed(11);
    let again: Vec<Array> = (0..1000)
        .map(|_| random::uniform(0.0, 1.0, &[1], Dtype::F32, None).unwrap())
        .collect();
    for (x, y) in lazy.iter().zip(&again).rev() {
        assert_eq!(x.item::<f32>().unwrap(), y.item::<f32>().unwrap());
    }
    assert_eq!(lazy[0].item::<f32>().unwrap(), first.0[0]);
}

// ---------------------------------------------------------------------------------------------
// Distributions
// ---------------------------------------------------------------------------------------------

#[test]
fn uniform_statistics() {
    let u = random::uniform(0.0, 1.0, &[N], Dtype::F32, Some(&key(1))).unwrap();
    let v = f64s(&u);
    assert!(v.iter().all(|&x| (0.0..1.0).contains(&x)));
    let (m, var) = stats(&v);
    close(m, 0.5, 0.005, "uniform mean");
    close(var, 1.0 / 12.0, 0.002, "uniform variance");
    // Each tenth of the interval gets about a tenth of the samples.
    let mut hist = [0usize; 10];
    for &x in &v {
        hist[(x * 10.0) as usize] += 1;
    }
    for (i, &h) in hist.iter().enumerate() {
        close(h as f64 / N as f64, 0.1, 0.005, &format!("uniform bin {i}"));
    }

    // Other bounds.
    let u = random::uniform(-3.0, 5.0, &[N], Dtype::F32, Some(&key(2))).unwrap();
    let v = f64s(&u);
    assert!(v.iter().all(|&x| (-3.0..5.0).contains(&x)));
    let (m, var) = stats(&v);
    close(m, 1.0, 0.04, "uniform(-3, 5) mean");
    close(var, 64.0 / 12.0, 0.1, "uniform(-3, 5) variance");
    // A degenerate interval is an error (no value lies in [2, 2)); a tiny one works.
    assert!(random::uniform(2.0, 2.0, &[10], Dtype::F32, Some(&key(3))).is_err());
    let u = random::uniform(1.0, 1.0 + 1e-6, &[1000], Dtype::F32, Some(&key(3))).unwrap();
    assert!(f64s(&u).iter().all(|&x| (1.0..1.0 + 1e-6).contains(&x)));
    // Invalid arguments.
    assert!(random::uniform(1.0, 0.0, &[1], Dtype::F32, None).is_err());
    assert!(random::uniform(0.0, f64::INFINITY, &[1], Dtype::F32, None).is_err());
    assert!(random::uniform(0.0, 1.0, &[1], Dtype::I32, None).is_err());
}

#[test]
fn normal_statistics() {
    let z = random::normal(&[N], Dtype::F32, 0.0, 1.0, Some(&key(4))).unwrap();
    let v = f64s(&z);
    assert!(v.iter().all(|x| x.is_finite()));
    let (m, var) = stats(&v);
    close(m, 0.0, 0.01, "normal mean");
    close(var.sqrt(), 1.0, 0.01, "normal std");
    let frac = |k: f64| v.iter().filter(|x| x.abs() <= k).count() as f64 / N as f64;
    close(frac(1.0), 0.682_689, 0.005, "normal within 1 sigma");
    close(frac(2.0), 0.954_500, 0.003, "normal within 2 sigma");
    close(frac(3.0), 0.997_300, 0.001, "normal within 3 sigma");
    // Symmetric.
    let pos = v.iter().filter(|&&x| x > 0.0).count() as f64 / N as f64;
    close(pos, 0.5, 0.005, "normal fraction positive");

    let z = random::normal(&[N], Dtype::F32, 3.0, 2.0, Some(&key(5))).unwrap();
    let (m, var) = stats(&f64s(&z));
    close(m, 3.0, 0.02, "normal(3, 2) mean");
    close(var.sqrt(), 2.0, 0.02, "normal(3, 2) std");
    assert!(random::normal(&[1], Dtype::I32, 0.0, 1.0, None).is_err());
}

#[test]
fn truncated_normal_statistics() {
    let (lo, hi) = (-1.0, 2.0);
    let z = random::truncated_normal(lo, hi, &[N], Dtype::F32, Some(&key(6))).unwrap();
    let v = f64s(&z);
    assert!(v.iter().all(|&x| (lo..=hi).contains(&x)), "out of bounds");
    // Mean of the truncated standard normal: (phi(a) - phi(b)) / (Phi(b) - Phi(a)).
    let phi = |x: f64| (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let (pa, pb) = (0.158_655_253_931_457, 0.977_249_868_051_821);
    let want = (phi(lo) - phi(hi)) / (pb - pa);
    let (m, _) = stats(&v);
    close(m, want, 0.01, "truncated normal mean");
    // Narrow and one-sided intervals stay inside too.
    for (lo, hi) in [
        (0.0, 0.1),
        (-5.0, -4.0),
        (1.5, f64::INFINITY),
        (f64::NEG_INFINITY, -2.0),
    ] {
        let z = random::truncated_normal(lo, hi, &[10_000], Dtype::F32, Some(&key(7))).unwrap();
        let v = f64s(&z);
        assert!(
            v.iter().all(|&x| x >= lo && x <= hi && x.is_finite()),
            "truncated_normal({lo}, {hi}) gave {:?}",
            v.iter().find(|&&x| !(x >= lo && x <= hi && x.is_finite()))
        );
    }
    assert!(random::truncated_normal(1.0, 1.0, &[1], Dtype::F32, None).is_err());
}

#[test]
fn randint_statistics() {
    let (lo, hi) = (-3i64, 7i64);
    let r = random::randint(lo, hi, &[N], Dtype::I32, Some(&key(8))).unwrap();
    assert_eq!(r.dtype(), Dtype::I32);
    let v = r.to_vec::<i32>().unwrap();
    let mut counts = [0usize; 10];
    for &x in &v {
        assert!((lo..hi).contains(&(x as i64)), "{x} outside [{lo}, {hi})");
        counts[(x as i64 - lo) as usize] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        close(
            c as f64 / N as f64,
            0.1,
            0.003,
            &format!("randint value {}", i as i64 + lo),
        );
    }
    // Other dtypes and ranges.
    let r = random::randint(0, 256, &[10_000], Dtype::U8, Some(&key(9))).unwrap();
    let v = r.to_vec::<u8>().unwrap();
    assert!(v.contains(&0) && v.contains(&255));
    let r = random::randint(
        -(1 << 40),
        -(1 << 40) + 3,
        &[1000],
        Dtype::I64,
        Some(&key(9)),
    )
    .unwrap();
    let v = r.to_vec::<i64>().unwrap();
    assert!(v.iter().all(|&x| (-(1 << 40)..-(1 << 40) + 3).contains(&x)));
    let r = random::randint(5, 6, &[100], Dtype::I32, Some(&key(9))).unwrap();
    assert!(r.to_vec::<i32>().unwrap().iter().all(|&x| x == 5));
    assert!(random::randint(3, 3, &[1], Dtype::I32, None).is_err());
    assert!(random::randint(0, 3, &[1], Dtype::F32, None).is_err());
}

#[test]
fn bernoulli_statistics() {
    for (i, p) in [0.3, 0.5, 0.9, 0.01].into_iter().enumerate() {
        let b = random::bernoulli(p, &[N], Some(&key(10 + i as u64))).unwrap();
        assert_eq!(b.dtype(), Dtype::Bool);
        let s = ops::sum(&b, Axes::All, false)
            .unwrap()
            .item::<i64>()
            .unwrap();
        close(s as f64 / N as f64, p, 0.003, &format!("bernoulli({p})"));
    }
    let all = random::bernoulli(1.0, &[10_000], Some(&key(1))).unwrap();
    assert!(all.to_vec::<bool>().unwrap().iter().all(|&x| x));
    let none = random::bernoulli(0.0, &[10_000], Some(&key(1))).unwrap();
    assert!(none.to_vec::<bool>().unwrap().iter().all(|&x| !x));
    assert!(random::bernoulli(1.5, &[1], None).is_err());
}

#[test]
fn categorical_frequencies_follow_softmax() {
    let logits = [0.0f32, 1.0, 2.0, -1.0];
    let l = Array::from_slice(&logits, &[1, 4]).unwrap();
    let rows = 1 << 18;
    let lb = ops::broadcast_to(&l, &[rows, 4]).unwrap();
    let s = random::categorical(&lb, -1, Some(&key(20))).unwrap();
    assert_eq!(s.shape(), &[rows]);
    let v = s.to_vec::<u32>().unwrap();
    let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
    let mut counts = [0usize; 4];
    for &c in &v {
        counts[c as usize] += 1;
    }
    for i in 0..4 {
        let want = (logits[i] as f64).exp() / z;
        close(
            counts[i] as f64 / rows as f64,
            want,
            0.005,
            &format!("class {i}"),
        );
    }
    // Along axis 0, and a class with -inf logit is never drawn.
    let l0 = Array::from_slice(&[f32::NEG_INFINITY, 0.0, 0.0], &[3, 1]).unwrap();
    let lb0 = ops::broadcast_to(&l0, &[3, 10_000]).unwrap();
    let s0 = random::categorical(&lb0, 0, Some(&key(21))).unwrap();
    assert_eq!(s0.shape(), &[10_000]);
    let v0 = s0.to_vec::<u32>().unwrap();
    assert!(v0.iter().all(|&c| c == 1 || c == 2));
    close(
        v0.iter().filter(|&&c| c == 1).count() as f64 / 10_000.0,
        0.5,
        0.03,
        "two equal classes",
    );
}

#[test]
fn permutation_is_a_permutation() {
    for n in [0usize, 1, 2, 10, 1000, 100_003] {
        let p = random::permutation(n, Some(&key(30))).unwrap();
        assert_eq!(p.shape(), &[n]);
        let mut v = p.to_vec::<u32>().unwrap();
        if n >= 10 {
            assert!(
                v.iter().enumerate().any(|(i, &x)| x as usize != i),
                "identity for n = {n}"
            );
        }
        v.sort_unstable();
        assert!(
            v.iter().enumerate().all(|(i, &x)| x as usize == i),
            "n = {n}"
        );
    }
    // Positions are uniform: element 0 lands in each half about equally often.
    let mut first_half = 0;
    for s in 0..400u64 {
        let p = random::permutation(10, Some(&key(1000 + s)))
            .unwrap()
            .to_vec::<u32>()
            .unwrap();
        if p.iter().position(|&x| x == 0).unwrap() < 5 {
            first_half += 1;
        }
    }
    close(
        first_half as f64 / 400.0,
        0.5,
        0.12,
        "permutation position of 0",
    );
    // shuffle permutes rows.
    let x = ops::reshape(&ops::arange(0.0, 20.0, 1.0, Dtype::I32).unwrap(), &[10, 2]).unwrap();
    let s = random::shuffle(&x, Some(&key(31))).unwrap();
    let v = s.to_vec::<i32>().unwrap();
    let mut rows: Vec<(i32, i32)> = v.chunks(2).map(|c| (c[0], c[1])).collect();
    assert!(rows.iter().all(|&(a, b)| b == a + 1 && a % 2 == 0));
    rows.sort_unstable();
    assert_eq!(
        rows,
        (0..10).map(|i| (2 * i, 2 * i + 1)).collect::<Vec<_>>()
    );
}

#[test]
fn dtype_variants() {
    for dt in [Dtype::F16, Dtype::BF16, Dtype::F64, Dtype::F32] {
        let n = 1 << 18;
        let u = random::uniform(0.0, 1.0, &[n], dt, Some(&key(40))).unwrap();
        assert_eq!(u.dtype(), dt);
        let v = f64s(&u);
        assert!(
            v.iter().all(|&x| (0.0..1.0).contains(&x)),
            "{dt} uniform outside [0, 1)"
        );
        let (m, var) = stats(&v);
        close(m, 0.5, 0.01, &format!("{dt} uniform mean"));
        close(var, 1.0 / 12.0, 0.005, &format!("{dt} uniform var"));
        let u = random::uniform(-2.0, 6.0, &[n], dt, Some(&key(41))).unwrap();
        let v = f64s(&u);
        assert!(
            v.iter().all(|&x| (-2.0..6.0).contains(&x)),
            "{dt} uniform outside [-2, 6)"
        );

        let z = random::normal(&[n], dt, 0.0, 1.0, Some(&key(42))).unwrap();
        assert_eq!(z.dtype(), dt);
        let v = f64s(&z);
        assert!(v.iter().all(|x| x.is_finite()), "{dt} normal not finite");
        let (m, var) = stats(&v);
        close(m, 0.0, 0.02, &format!("{dt} normal mean"));
        close(var.sqrt(), 1.0, 0.02, &format!("{dt} normal std"));

        let t = random::truncated_normal(-0.5, 0.5, &[n], dt, Some(&key(43))).unwrap();
        assert_eq!(t.dtype(), dt);
        assert!(
            f64s(&t).iter().all(|&x| (-0.5..=0.5).contains(&x)),
            "{dt} truncated"
        );
    }
    // Integer dtypes for randint.
    for dt in [Dtype::U8, Dtype::U32, Dtype::I32, Dtype::I64] {
        let r = random::randint(0, 10, &[1000], dt, Some(&key(44))).unwrap();
        assert_eq!(r.dtype(), dt);
        assert!(
            f64s(&r)
                .iter()
                .all(|&x| (0.0..10.0).contains(&x) && x.fract() == 0.0)
        );
    }
}

#[test]
fn invalid_arguments_are_errors_not_panics() {
    let k = key(1);
    assert!(random::randint(i64::MIN, i64::MAX, &[4], Dtype::I64, Some(&k)).is_err());
    assert!(random::randint(250, 300, &[4], Dtype::U8, Some(&k)).is_err());
    assert!(random::randint(-1, 3, &[4], Dtype::U32, Some(&k)).is_err());
    assert!(random::truncated_normal(-1.0, 1.0, &[4], Dtype::I32, Some(&k)).is_err());
    assert!(random::normal(&[4], Dtype::F32, 0.0, -1.0, Some(&k)).is_err());
    assert!(random::normal(&[4], Dtype::F32, f64::NAN, 1.0, Some(&k)).is_err());
    let v = random::randint(250, 256, &[100], Dtype::U8, Some(&k))
        .unwrap()
        .to_vec::<u8>()
        .unwrap();
    assert!(v.iter().all(|&x| x >= 250));
}
