use tessera_core::ops::{self, Axes};
use tessera_core::{Array, Dtype};

#[test]
fn basic_graph() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = ops::exp(&a).unwrap();
    let c = ops::sum(&b, 1, false).unwrap();
    let v = c.to_vec::<f32>().unwrap();
    let e: Vec<f32> = vec![
        1f32.exp() + 2f32.exp() + 3f32.exp(),
        4f32.exp() + 5f32.exp() + 6f32.exp(),
    ];
    for (x, y) in v.iter().zip(&e) {
        assert!((x - y).abs() / y < 1e-5, "{x} {y}");
    }
    let t = ops::transpose(&a, None).unwrap();
    assert_eq!(
        t.to_vec::<f32>().unwrap(),
        vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    let m = ops::matmul(&a, &t).unwrap();
    assert_eq!(m.to_vec::<f32>().unwrap(), vec![14.0, 32.0, 32.0, 77.0]);
    let s = ops::sum(&a, 0, true).unwrap();
    assert_eq!(s.shape(), &[1, 3]);
    assert_eq!(s.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 9.0]);
    println!("{a}");
    println!("{}", ops::arange(0.0, 2000.0, 1.0, Dtype::I32).unwrap());
    let r = ops::sum(
        &ops::ones(&[1000, 1000], Dtype::F32).unwrap(),
        Axes::All,
        false,
    )
    .unwrap();
    assert_eq!(r.item::<f32>().unwrap(), 1e6);
}

#[test]
fn million_node_chain() {
    let mut x = Array::scalar(0.0f32);
    let one = Array::scalar(1.0f32);
    for _ in 0..1_000_000 {
        x = ops::add(&x, &one).unwrap();
    }
    assert_eq!(x.item::<f32>().unwrap(), 1e6);
    let mut y = Array::scalar(0.0f32);
    for _ in 0..1_000_000 {
        y = ops::add(&y, &one).unwrap();
    }
    drop(y); // unevaluated chain dropped without recursion
}

/// Large arrays take the parallel paths (rows split into pieces across threads); compare with
/// plain loops over the same data.
#[test]
fn large_arrays_match_serial_reference() {
    use tessera_core::random;
    for &(r, c) in &[(1usize, 3_000_001usize), (3, 1_000_003), (1001, 3001)] {
        let k = random::key(r as u64);
        let a = random::uniform(-2.0, 2.0, &[r, c], Dtype::F32, Some(&k)).unwrap();
        let b = random::uniform(-2.0, 2.0, &[1, c], Dtype::F32, Some(&random::key(7))).unwrap();
        let av = a.to_vec::<f32>().unwrap();
        let bv = b.to_vec::<f32>().unwrap();
        let s = ops::add(&a, &b).unwrap().to_vec::<f32>().unwrap();
        let e = ops::exp(&a).unwrap().to_vec::<f32>().unwrap();
        let w = ops::where_(&ops::greater(&a, &b).unwrap(), &a, &b)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for i in 0..r * c {
            let (x, y) = (av[i], bv[i % c]);
            assert_eq!(s[i], x + y, "add at {i}");
            assert!((e[i] - x.exp()).abs() <= 1e-6 * x.exp(), "exp at {i}");
            assert_eq!(w[i], if x > y { x } else { y }, "where at {i}");
        }
        // Transposed input (strided rows) through a unary op and a copy.
        let t = ops::transpose(&a, None).unwrap();
        let tv = ops::negative(&t).unwrap().to_vec::<f32>().unwrap();
        for i in (0..r * c).step_by(997) {
            let (row, col) = (i / r, i % r);
            assert_eq!(tv[i], -av[col * c + row]);
        }
        // Row sums and argmax along the long axis.
        let sums = ops::sum(&a, 1, false).unwrap().to_vec::<f32>().unwrap();
        let am = ops::argmax(&a, Some(1), false)
            .unwrap()
            .to_vec::<u32>()
            .unwrap();
        for i in 0..r {
            let row = &av[i * c..(i + 1) * c];
            let reference: f64 = row.iter().map(|&v| v as f64).sum();
            assert!(
                (sums[i] as f64 - reference).abs() < 1e-3 * (c as f64).sqrt(),
                "sum row {i}"
            );
            let best = row
                .iter()
                .enumerate()
                .fold(0, |bi, (j, &v)| if v > row[bi] { j } else { bi });
            assert_eq!(am[i] as usize, best);
        }
        // Column sums (kept dim contiguous) and cumsum along the long axis.
        let cs = ops::sum(&a, 0, false).unwrap().to_vec::<f32>().unwrap();
        for j in (0..c).step_by(101) {
            let reference: f64 = (0..r).map(|i| av[i * c + j] as f64).sum();
            assert!((cs[j] as f64 - reference).abs() < 1e-4 * r as f64);
        }
        if r == 3 {
            let cu = ops::cumsum(&a, Some(1), false, true)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let mut acc = 0f32;
            for j in 0..c {
                acc += av[j];
                assert_eq!(cu[j], acc);
            }
        }
    }
}

#[test]
fn gather_by_index_arrays() {
    // a[rows[:, None], cols] on a (3, 4, 2) array: broadcast (2, 3) index grid, trailing dim kept.
    let a = ops::reshape(
        &ops::arange(0.0, 24.0, 1.0, Dtype::I32).unwrap(),
        &[3, 4, 2],
    )
    .unwrap();
    let rows = Array::from_slice(&[2i64, 0], &[2, 1]).unwrap();
    let cols = Array::from_slice(&[0i32, 3, -1], &[3]).unwrap();
    let g = ops::gather(&a, &[rows, cols], &[0, 1]).unwrap();
    assert_eq!(g.shape(), &[2, 3, 2]);
    // NumPy: np.arange(24).reshape(3,4,2)[[[2],[0]], [0,3,-1]].ravel()
    assert_eq!(
        g.to_vec::<i32>().unwrap(),
        vec![16, 17, 22, 23, 22, 23, 0, 1, 6, 7, 6, 7]
    );
    let bad = Array::from_slice(&[4i32], &[1]).unwrap();
    let g = ops::gather(&a, &[bad], &[1]).unwrap();
    let err = g.eval().unwrap_err().to_string();
    assert!(err.contains("out of range"), "{err}");
}

/// The fused last-axis softmax agrees with the composite written from other ops.
#[test]
fn fused_softmax_matches_composite() {
    use tessera_core::random;
    for &(shape, dt, tol) in &[
        (&[3usize, 1000][..], Dtype::F32, 1e-6),
        (&[2, 5, 17][..], Dtype::F32, 1e-6),
        (&[4, 33][..], Dtype::F64, 1e-12),
        (&[4, 700][..], Dtype::BF16, 8e-3),
        (&[4, 700][..], Dtype::F16, 1e-3),
        (&[1, 1][..], Dtype::F32, 0.0),
    ] {
        let x = random::normal(shape, Dtype::F32, 0.0, 3.0, Some(&random::key(3)))
            .unwrap()
            .astype(dt)
            .unwrap();
        let fused = ops::softmax(&x, -1).unwrap();
        assert_eq!(fused.primitive(), Some(tessera_core::Primitive::Softmax));
        // The reference runs in f32 (or f64): the composite in half precision rounds every step.
        let wide = x
            .astype(if dt == Dtype::F64 {
                Dtype::F64
            } else {
                Dtype::F32
            })
            .unwrap();
        let reference = ops::softmax_composite(&wide, -1).unwrap();
        let (f, r) = (
            fused.to_vec::<f64>().unwrap(),
            reference.to_vec::<f64>().unwrap(),
        );
        for (a, b) in f.iter().zip(&r) {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1e-3) + 1e-7,
                "{dt} {shape:?}: {a} vs {b}"
            );
        }
        // Transposed input: the kernel copies to rows first.
        if shape.len() == 2 {
            let t = ops::transpose(&x, None).unwrap();
            let f = ops::softmax(&t, -1).unwrap().to_vec::<f64>().unwrap();
            let tw = ops::transpose(&wide, None).unwrap();
            let r = ops::softmax_composite(&tw, -1)
                .unwrap()
                .to_vec::<f64>()
                .unwrap();
            for (a, b) in f.iter().zip(&r) {
                assert!((a - b).abs() <= tol * b.abs().max(1e-3) + 1e-7);
            }
        }
    }
    // Infinities: a row with +inf gives NaN (as NumPy), a row of -inf and finite values is fine.
    let x = Array::from_slice(&[f32::NEG_INFINITY, 0.0, 0.0], &[1, 3]).unwrap();
    assert_eq!(
        ops::softmax(&x, -1).unwrap().to_vec::<f32>().unwrap(),
        vec![0.0, 0.5, 0.5]
    );
}

/// Large contiguous f32 add/sub/mul/div take the streaming-store path; check every element.
#[test]
fn streaming_store_arithmetic_is_exact() {
    use tessera_core::random;
    let n = 4_000_037;
    let a = random::uniform(-2.0, 2.0, &[n], Dtype::F32, Some(&random::key(11))).unwrap();
    let b = random::uniform(0.5, 2.0, &[n], Dtype::F32, Some(&random::key(12))).unwrap();
    let (av, bv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    type Op = fn(&Array, &Array) -> tessera_core::Result<Array>;
    let cases: [(Op, fn(f32, f32) -> f32); 4] = [
        (ops::add, |x, y| x + y),
        (ops::subtract, |x, y| x - y),
        (ops::multiply, |x, y| x * y),
        (ops::divide, |x, y| x / y),
    ];
    for (f, g) in cases {
        let r = f(&a, &b).unwrap().to_vec::<f32>().unwrap();
        assert!(
            r.iter()
                .zip(av.iter().zip(&bv))
                .all(|(z, (x, y))| *z == g(*x, *y))
        );
    }
    // In place (the input is donated): same values.
    let c = ops::add(&ops::multiply(&a, &b).unwrap(), &b)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!(
        c.iter()
            .zip(av.iter().zip(&bv))
            .all(|(z, (x, y))| *z == x * y + y)
    );
}
