//! Property tests: shapes, views, dtypes, reductions and gathers checked against naive
//! references computed in plain Rust from row-major data.

use proptest::prelude::*;
use tessera_core::ops::{self, Axes, SplitAt};
use tessera_core::{Array, Dtype};

// ---------------------------------------------------------------------------------------------
// Naive helpers
// ---------------------------------------------------------------------------------------------

fn size(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The multi-index of flat position `flat` in a row-major `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0usize; shape.len()];
    for i in (0..shape.len()).rev() {
        if shape[i] > 0 {
            idx[i] = flat % shape[i];
            flat /= shape[i];
        }
    }
    idx
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    let st = row_major_strides(shape);
    idx.iter().zip(&st).map(|(i, s)| i * s).sum()
}

/// NumPy's broadcast of two shapes, or None.
fn naive_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db {
            da
        } else if da == 1 {
            db
        } else if db == 1 {
            da
        } else {
            return None;
        };
    }
    Some(out)
}

/// Flat index into an input of `in_shape` for output index `out_idx` under broadcasting.
fn broadcast_index(out_idx: &[usize], in_shape: &[usize]) -> usize {
    let off = out_idx.len() - in_shape.len();
    let idx: Vec<usize> = in_shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { out_idx[i + off] })
        .collect();
    ravel(&idx, in_shape)
}

/// CPython's `slice.indices(length)` followed by `range(...)`.
fn py_slice(start: Option<isize>, stop: Option<isize>, step: isize, len: usize) -> Vec<usize> {
    assert!(step != 0);
    let len = len as isize;
    let (lower, upper) = if step > 0 { (0, len) } else { (-1, len - 1) };
    let fix = |v: isize| {
        let v = if v < 0 { v + len } else { v };
        if v < lower {
            lower
        } else if v > upper {
            upper
        } else {
            v
        }
    };
    let s = match start {
        None => {
            if step < 0 {
                upper
            } else {
                lower
            }
        }
        Some(v) => fix(v),
    };
    let e = match stop {
        None => {
            if step < 0 {
                lower
            } else {
                upper
            }
        }
        Some(v) => fix(v),
    };
    let mut out = vec![];
    let mut i = s;
    while (step > 0 && i < e) || (step < 0 && i > e) {
        out.push(i as usize);
        i += step;
    }
    out
}

/// Gathers `data` (row-major, `shape`) at the cartesian product of per-axis index lists.
fn gather_product(
    data: &[f32],
    shape: &[usize],
    per_axis: &[Vec<usize>],
) -> (Vec<f32>, Vec<usize>) {
    let out_shape: Vec<usize> = per_axis.iter().map(|v| v.len()).collect();
    let n = size(&out_shape);
    let mut out = Vec::with_capacity(n);
    for f in 0..n {
        let oi = unravel(f, &out_shape);
        let src: Vec<usize> = oi
            .iter()
            .enumerate()
            .map(|(ax, &i)| per_axis[ax][i])
            .collect();
        out.push(data[ravel(&src, shape)]);
    }
    (out, out_shape)
}

/// Row-major data of `transpose(data, perm)`.
fn naive_transpose(data: &[f32], shape: &[usize], perm: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let n = size(&out_shape);
    let mut out = Vec::with_capacity(n);
    for f in 0..n {
        let oi = unravel(f, &out_shape);
        let mut src = vec![0; shape.len()];
        for (k, &p) in perm.iter().enumerate() {
            src[p] = oi[k];
        }
        out.push(data[ravel(&src, shape)]);
    }
    (out, out_shape)
}

fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

fn arr(data: &[f32], shape: &[usize]) -> Array {
    Array::from_slice(data, shape).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn shape_strategy(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=max_dim, 0..=max_rank)
}

fn nonempty_shape(min_rank: usize, max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=4, min_rank..=max_rank)
}

/// Two shapes that broadcast together: suffixes of one output shape with 1s sprinkled in.
fn compatible_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape_strategy(4, 4).prop_flat_map(|out| {
        let n = out.len();
        let side = (0..=n, prop::collection::vec(any::<bool>(), n));
        (Just(out), side.clone(), side).prop_map(move |(out, (ka, ma), (kb, mb))| {
            let mk = |k: usize, m: &[bool]| -> Vec<usize> {
                (n - k..n).map(|i| if m[i] { 1 } else { out[i] }).collect()
            };
            (mk(ka, &ma), mk(kb, &mb))
        })
    })
}

/// A shape and a permutation of its axes.
fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape_strategy(4, 4).prop_flat_map(|s| {
        let n = s.len();
        (Just(s), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    })
}

type Bound = (Option<isize>, Option<isize>, isize);

fn bound_strategy() -> impl Strategy<Value = Bound> {
    (
        prop::option::of(-7isize..=7),
        prop::option::of(-7isize..=7),
        prop_oneof![-4isize..=-1, 1isize..=4],
    )
}

/// A shape and slice bounds for some of its leading axes.
fn shape_and_bounds() -> impl Strategy<Value = (Vec<usize>, Vec<Bound>)> {
    shape_strategy(3, 5).prop_flat_map(|s| {
        let n = s.len();
        (Just(s), prop::collection::vec(bound_strategy(), 0..=n))
    })
}

/// A shape and a set of axes (some written negative).
fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, Vec<isize>, bool)> {
    shape_strategy(4, 4).prop_flat_map(|s| {
        let n = s.len();
        (
            Just(s),
            prop::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n),
            prop::collection::vec(any::<bool>(), n),
            any::<bool>(),
        )
            .prop_map(move |(s, ax, neg, keep)| {
                let ax = ax
                    .into_iter()
                    .map(|a| {
                        if neg[a] {
                            a as isize - n as isize
                        } else {
                            a as isize
                        }
                    })
                    .collect();
                (s, ax, keep)
            })
    })
}

fn per_axis_slices(shape: &[usize], bounds: &[Bound]) -> Vec<Vec<usize>> {
    (0..shape.len())
        .map(|i| match bounds.get(i) {
            Some(&(s, e, st)) => py_slice(s, e, st, shape[i]),
            None => (0..shape[i]).collect(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn broadcasting_add_matches_reference((sa, sb) in compatible_shapes()) {
        let da = iota(size(&sa));
        let db: Vec<f32> = (0..size(&sb)).map(|i| 1000.0 * i as f32).collect();
        let expect_shape = naive_broadcast(&sa, &sb).expect("strategy makes compatible shapes");
        prop_assert_eq!(ops::broadcast_shapes("add", &sa, &sb).unwrap(), expect_shape.clone());
        let c = ops::add(&arr(&da, &sa), &arr(&db, &sb)).unwrap();
        prop_assert_eq!(c.shape(), expect_shape.as_slice());
        let got = c.to_vec::<f32>().unwrap();
        let n = size(&expect_shape);
        prop_assert_eq!(got.len(), n);
        for (f, g) in got.iter().enumerate() {
            let oi = unravel(f, &expect_shape);
            let want = da[broadcast_index(&oi, &sa)] + db[broadcast_index(&oi, &sb)];
            prop_assert_eq!(*g, want, "at {:?} for {:?} + {:?}", oi, sa, sb);
        }
        // Symmetric.
        let c2 = ops::add(&arr(&db, &sb), &arr(&da, &sa)).unwrap();
        prop_assert_eq!(c2.to_vec::<f32>().unwrap(), got);
    }

    #[test]
    fn broadcasting_arbitrary_shapes_never_panic(sa in shape_strategy(4, 3), sb in shape_strategy(4, 3)) {
        let a = arr(&iota(size(&sa)), &sa);
        let b = arr(&iota(size(&sb)), &sb);
        match naive_broadcast(&sa, &sb) {
            None => {
                prop_assert!(ops::broadcast_shapes("add", &sa, &sb).is_err());
                let e = ops::add(&a, &b);
                prop_assert!(
                    matches!(e, Err(tessera_core::Error::Broadcast { .. })),
                    "{:?} + {:?} gave {:?}", sa, sb, e.map(|x| x.shape().to_vec())
                );
                prop_assert!(ops::broadcast_to(&a, &sb).is_err());
            }
            Some(s) => {
                let c = ops::add(&a, &b).unwrap();
                prop_assert_eq!(c.shape(), s.as_slice());
                prop_assert_eq!(c.to_vec::<f32>().unwrap().len(), size(&s));
                // broadcast_to the output shape works for both inputs.
                let bt = ops::broadcast_to(&a, &s).unwrap();
                prop_assert_eq!(bt.shape(), s.as_slice());
            }
        }
    }

    #[test]
    fn transpose_reshape_round_trip((shape, perm) in shape_and_perm()) {
        let data = iota(size(&shape));
        let a = arr(&data, &shape);
        let p: Vec<isize> = perm.iter().map(|&x| x as isize).collect();
        let t = ops::transpose(&a, Some(&p)).unwrap();
        let (want, tshape) = naive_transpose(&data, &shape, &perm);
        prop_assert_eq!(t.shape(), tshape.as_slice());
        let flat = ops::reshape(&t, &[size(&shape)]).unwrap();
        prop_assert_eq!(flat.to_vec::<f32>().unwrap(), want.clone());
        let back = ops::reshape(&flat, &tshape).unwrap();
        let cont = ops::contiguous(&t).unwrap();
        prop_assert_eq!(back.shape(), cont.shape());
        prop_assert_eq!(back.to_vec::<f32>().unwrap(), cont.to_vec::<f32>().unwrap());
        prop_assert_eq!(cont.to_vec::<f32>().unwrap(), want);
        // Inverse permutation restores the original.
        let mut inv = vec![0isize; perm.len()];
        for (k, &pp) in perm.iter().enumerate() {
            inv[pp] = k as isize;
        }
        let r = ops::transpose(&back, Some(&inv)).unwrap();
        prop_assert_eq!(r.shape(), shape.as_slice());
        prop_assert_eq!(r.to_vec::<f32>().unwrap(), data);
    }

    #[test]
    fn reshape_infer_minus_one(shape in nonempty_shape(1, 4), split in 0usize..4, at in 0usize..4) {
        // Reshape to the shape with one dim replaced by -1, after regrouping.
        let data = iota(size(&shape));
        let a = arr(&data, &shape);
        let at = at % shape.len();
        let mut target: Vec<isize> = shape.iter().map(|&d| d as isize).collect();
        target[at] = -1;
        let r = ops::reshape_infer(&a, &target).unwrap();
        prop_assert_eq!(r.shape(), shape.as_slice());
        prop_assert_eq!(r.to_vec::<f32>().unwrap(), data.clone());
        // Flatten with -1, and (-1, last) style.
        let f = ops::reshape_infer(&a, &[-1]).unwrap();
        prop_assert_eq!(f.shape(), &[size(&shape)]);
        let k = shape[split % shape.len()];
        let g = ops::reshape_infer(&a, &[-1, k as isize]).unwrap();
        prop_assert_eq!(g.shape(), &[size(&shape) / k, k]);
        prop_assert_eq!(g.to_vec::<f32>().unwrap(), data);
        // Two -1s, or a -1 that cannot divide, are errors.
        prop_assert!(ops::reshape_infer(&a, &[-1, -1]).is_err());
        let n = size(&shape) as isize;
        prop_assert!(ops::reshape_infer(&a, &[-1, n + 1]).is_err());
    }

    #[test]
    fn slices_match_python((shape, bounds) in shape_and_bounds()) {
        let data = iota(size(&shape));
        let a = arr(&data, &shape);
        let s = ops::slice_opt(&a, &bounds).unwrap();
        let (want, wshape) = gather_product(&data, &shape, &per_axis_slices(&shape, &bounds));
        prop_assert_eq!(s.shape(), wshape.as_slice(), "bounds {:?} on {:?}", bounds, shape);
        prop_assert_eq!(s.to_vec::<f32>().unwrap(), want.clone(), "bounds {:?} on {:?}", bounds, shape);
        // A computation on the view (not just a copy) sees the same values.
        let doubled = ops::multiply(&s, &Array::scalar(2.0f32)).unwrap();
        let w2: Vec<f32> = want.iter().map(|x| x * 2.0).collect();
        prop_assert_eq!(doubled.to_vec::<f32>().unwrap(), w2);
    }

    #[test]
    fn slice_of_slice_matches_python((shape, b1) in shape_and_bounds(), b2 in prop::collection::vec(bound_strategy(), 0..=3)) {
        let data = iota(size(&shape));
        let a = arr(&data, &shape);
        let s1 = ops::slice_opt(&a, &b1).unwrap();
        let (d1, sh1) = gather_product(&data, &shape, &per_axis_slices(&shape, &b1));
        let b2: Vec<Bound> = b2.into_iter().take(sh1.len()).collect();
        let s2 = ops::slice_opt(&s1, &b2).unwrap();
        let (d2, sh2) = gather_product(&d1, &sh1, &per_axis_slices(&sh1, &b2));
        prop_assert_eq!(s2.shape(), sh2.as_slice());
        prop_assert_eq!(s2.to_vec::<f32>().unwrap(), d2);
    }

    #[test]
    fn slicing_a_transposed_array((shape, perm) in shape_and_perm(), bounds in prop::collection::vec(bound_strategy(), 0..=4)) {
        let data = iota(size(&shape));
        let a = arr(&data, &shape);
        let p: Vec<isize> = perm.iter().map(|&x| x as isize).collect();
        let t = ops::transpose(&a, Some(&p)).unwrap();
        let (td, tshape) = naive_transpose(&data, &shape, &perm);
        let bounds: Vec<Bound> = bounds.into_iter().take(tshape.len()).collect();
        let s = ops::slice_opt(&t, &bounds).unwrap();
        let (want, wshape) = gather_product(&td, &tshape, &per_axis_slices(&tshape, &bounds));
        prop_assert_eq!(s.shape(), wshape.as_slice());
        prop_assert_eq!(s.to_vec::<f32>().unwrap(), want.clone());
        // And reshaping that (maybe non-contiguous) view to flat.
        let flat = ops::reshape(&s, &[want.len()]).unwrap();
        prop_assert_eq!(flat.to_vec::<f32>().unwrap(), want);
    }

    #[test]
    fn slice_update_then_slice_returns_update((shape, bounds) in shape_and_bounds()) {
        let data = iota(size(&shape));
        let a = arr(&data, &shape);
        let per = per_axis_slices(&shape, &bounds);
        let wshape: Vec<usize> = per.iter().map(|v| v.len()).collect();
        let upd: Vec<f32> = (0..size(&wshape)).map(|i| -1.0 - i as f32).collect();
        let u = arr(&upd, &wshape);
        let r = ops::slice_update_opt(&a, &u, &bounds).unwrap();
        prop_assert_eq!(r.shape(), shape.as_slice());
        let back = ops::slice_opt(&r, &bounds).unwrap();
        prop_assert_eq!(back.to_vec::<f32>().unwrap(), upd.clone());
        // Everything outside the window is unchanged; the window holds the update.
        let mut want = data.clone();
        for f in 0..upd.len() {
            let wi = unravel(f, &wshape);
            let src: Vec<usize> = wi.iter().enumerate().map(|(ax, &i)| per[ax][i]).collect();
            want[ravel(&src, &shape)] = upd[f];
        }
        prop_assert_eq!(r.to_vec::<f32>().unwrap(), want);
        // The original is untouched (no aliasing through the update).
        prop_assert_eq!(a.to_vec::<f32>().unwrap(), data);
    }

    #[test]
    fn astype_round_trips_every_dtype(vals in prop::collection::vec(0u8..=100, 0..20)) {
        let n = vals.len();
        let src: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
        let a = Array::from_slice(&src, &[n]).unwrap();
        for dt in Dtype::ALL {
            let want: Vec<f64> = if dt == Dtype::Bool {
                src.iter().map(|&v| (v != 0.0) as u8 as f64).collect()
            } else {
                src.clone()
            };
            let c = a.astype(dt).unwrap();
            prop_assert_eq!(c.dtype(), dt);
            let back = c.astype(Dtype::F64).unwrap();
            prop_assert_eq!(back.to_vec::<f64>().unwrap(), want.clone(), "via {}", dt);
            // to_vec converts too.
            prop_assert_eq!(c.to_vec::<f64>().unwrap(), want.clone(), "to_vec of {}", dt);
            // And through every other dtype.
            for dt2 in Dtype::ALL {
                let w2: Vec<f64> = if dt2 == Dtype::Bool {
                    want.iter().map(|&v| (v != 0.0) as u8 as f64).collect()
                } else {
                    want.clone()
                };
                let v = c.astype(dt2).unwrap().astype(Dtype::F64).unwrap().to_vec::<f64>().unwrap();
                prop_assert_eq!(v, w2, "{} -> {}", dt, dt2);
            }
        }
    }

    #[test]
    fn sum_matches_reference((shape, axes, keep) in shape_and_axes(), seed in any::<u64>()) {
        let n = size(&shape);
        // Deterministic pseudo-random data in [-10, 10).
        let mut st = seed | 1;
        let data: Vec<f32> = (0..n).map(|_| {
            st ^= st << 13; st ^= st >> 7; st ^= st << 17;
            ((st >> 40) as f32 / (1u64 << 24) as f32) * 20.0 - 10.0
        }).collect();
        let a = arr(&data, &shape);
        let nd = shape.len();
        let ax: Vec<usize> = axes.iter().map(|&x| if x < 0 { (x + nd as isize) as usize } else { x as usize }).collect();
        let kept: Vec<usize> = (0..nd).map(|i| if ax.contains(&i) { 1 } else { shape[i] }).collect();
        let mut want = vec![0f64; size(&kept)];
        let mut mag = vec![0f64; size(&kept)];
        for (f, &v) in data.iter().enumerate() {
            let mut i = unravel(f, &shape);
            for &x in &ax { i[x] = 0; }
            let o = ravel(&i, &kept);
            want[o] += v as f64;
            mag[o] += (v as f64).abs();
        }
        let s = ops::sum(&a, Axes::Some(axes.clone()), keep).unwrap();
        let out_shape: Vec<usize> = if keep { kept.clone() } else {
            (0..nd).filter(|i| !ax.contains(i)).map(|i| shape[i]).collect()
        };
        prop_assert_eq!(s.shape(), out_shape.as_slice());
        let got = s.to_vec::<f32>().unwrap();
        prop_assert_eq!(got.len(), want.len());
        for i in 0..got.len() {
            let tol = 1e-5 * (mag[i] + 1.0);
            prop_assert!((got[i] as f64 - want[i]).abs() <= tol,
                "sum over {:?} of {:?}: [{}] {} vs {}", axes, shape, i, got[i], want[i]);
        }
        // Integer sums are exact.
        let ints: Vec<i32> = data.iter().map(|&v| v as i32).collect();
        let ai = Array::from_slice(&ints, &shape).unwrap();
        let mut wi = vec![0i64; size(&kept)];
        for (f, &v) in ints.iter().enumerate() {
            let mut i = unravel(f, &shape);
            for &x in &ax { i[x] = 0; }
            wi[ravel(&i, &kept)] += v as i64;
        }
        let gi = ops::sum(&ai, Axes::Some(axes), keep).unwrap().to_vec::<i64>().unwrap();
        prop_assert_eq!(gi, wi);
    }

    #[test]
    fn argmax_matches_reference(shape in nonempty_shape(1, 3), axis in prop::option::of(0usize..3), vals in prop::collection::vec(0i32..5, 64)) {
        let n = size(&shape);
        let data: Vec<f32> = (0..n).map(|i| vals[i % vals.len()] as f32 + (i / vals.len()) as f32).collect();
        let a = arr(&data, &shape);
        match axis.map(|x| x % shape.len()) {
            None => {
                let mut best = 0;
                for i in 0..n { if data[i] > data[best] { best = i; } }
                let r = ops::argmax(&a, None, false).unwrap();
                prop_assert_eq!(r.shape(), &[] as &[usize]);
                prop_assert_eq!(r.item::<u32>().unwrap() as usize, best);
                let mut worst = 0;
                for i in 0..n { if data[i] < data[worst] { worst = i; } }
                prop_assert_eq!(ops::argmin(&a, None, false).unwrap().item::<u32>().unwrap() as usize, worst);
            }
            Some(ax) => {
                let mut out_shape = shape.clone();
                out_shape[ax] = 1;
                let mut want = vec![0usize; size(&out_shape)];
                for f in 0..size(&out_shape) {
                    let mut i = unravel(f, &out_shape);
                    let mut best = 0;
                    let mut bv = f32::NEG_INFINITY;
                    for k in 0..shape[ax] {
                        i[ax] = k;
                        let v = data[ravel(&i, &shape)];
                        if v > bv { bv = v; best = k; }
                    }
                    want[f] = best;
                }
                let r = ops::argmax(&a, Some(ax as isize), true).unwrap();
                prop_assert_eq!(r.shape(), out_shape.as_slice());
                let got: Vec<usize> = r.to_vec::<u32>().unwrap().into_iter().map(|x| x as usize).collect();
                prop_assert_eq!(got, want, "argmax axis {} of {:?}: {:?}", ax, shape, data);
            }
        }
    }

    #[test]
    fn concatenate_split_round_trip(
        (shape, ax) in nonempty_shape(1, 3).prop_flat_map(|s| { let n = s.len(); (Just(s), 0..n) }),
        extra in prop::collection::vec(0usize..4, 1..4),
    ) {
        // Pieces of different sizes along `ax`, concatenated then split back at the boundaries.
        let mut pieces = vec![];
        let mut datas = vec![];
        let mut base = 0.0;
        for &e in std::iter::once(&shape[ax]).chain(extra.iter()) {
            let mut s = shape.clone();
            s[ax] = e;
            let d: Vec<f32> = (0..size(&s)).map(|i| base + i as f32).collect();
            base += 1000.0;
            pieces.push(arr(&d, &s));
            datas.push((d, s));
        }
        let c = ops::concatenate(&pieces, ax as isize).unwrap();
        let total: usize = datas.iter().map(|(_, s)| s[ax]).sum();
        prop_assert_eq!(c.shape()[ax], total);
        let mut bounds = vec![];
        let mut acc = 0isize;
        for (_, s) in &datas[..datas.len() - 1] {
            acc += s[ax] as isize;
            bounds.push(acc);
        }
        let parts = ops::split(&c, SplitAt::Indices(bounds), ax as isize).unwrap();
        prop_assert_eq!(parts.len(), datas.len());
        for (p, (d, s)) in parts.iter().zip(&datas) {
            prop_assert_eq!(p.shape(), s.as_slice());
            prop_assert_eq!(&p.to_vec::<f32>().unwrap(), d);
        }
        // Equal sections of the original.
        let a = &pieces[0];
        let k = shape[ax];
        let eq = ops::split(a, SplitAt::Sections(k), ax as isize).unwrap();
        let again = ops::concatenate(&eq, ax as isize).unwrap();
        prop_assert_eq!(again.to_vec::<f32>().unwrap(), datas[0].0.clone());
        // Negative axis gives the same.
        let c2 = ops::concatenate(&pieces, ax as isize - shape.len() as isize).unwrap();
        prop_assert_eq!(c2.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap());
    }

    #[test]
    fn take_matches_gather(
        shape in nonempty_shape(1, 3),
        axis in prop::option::of(0usize..3),
        raw in prop::collection::vec(any::<i64>(), 0..8),
        two_d in any::<bool>(),
    ) {
        let data = iota(size(&shape));
        let a = arr(&data, &shape);
        let ax = axis.map(|x| x % shape.len());
        let n = match ax { Some(x) => shape[x], None => size(&shape) } as i64;
        // Indices in [-n, n).
        let idx: Vec<i32> = raw.iter().map(|&r| (r.rem_euclid(2 * n) - n) as i32).collect();
        let ishape: Vec<usize> = if two_d && idx.len() % 2 == 0 { vec![2, idx.len() / 2] } else { vec![idx.len()] };
        let ia = Array::from_slice(&idx, &ishape).unwrap();
        let r = ops::take(&a, &ia, ax.map(|x| x as isize)).unwrap();
        let wrap = |i: i32| if i < 0 { (i as i64 + n) as usize } else { i as usize };
        match ax {
            None => {
                prop_assert_eq!(r.shape(), ishape.as_slice());
                let want: Vec<f32> = idx.iter().map(|&i| data[wrap(i)]).collect();
                prop_assert_eq!(r.to_vec::<f32>().unwrap(), want);
            }
            Some(ax) => {
                let mut os = shape[..ax].to_vec();
                os.extend_from_slice(&ishape);
                os.extend_from_slice(&shape[ax + 1..]);
                prop_assert_eq!(r.shape(), os.as_slice());
                let mut want = vec![];
                for f in 0..size(&os) {
                    let oi = unravel(f, &os);
                    let k = ravel(&oi[ax..ax + ishape.len()], &ishape);
                    let mut src = oi[..ax].to_vec();
                    src.push(wrap(idx[k]));
                    src.extend_from_slice(&oi[ax + ishape.len()..]);
                    want.push(data[ravel(&src, &shape)]);
                }
                prop_assert_eq!(r.to_vec::<f32>().unwrap(), want);
            }
        }
    }

    #[test]
    fn sort_is_sorted_permutation(
        shape in nonempty_shape(1, 3),
        axis in prop::option::of(0usize..3),
        vals in prop::collection::vec(-5i32..5, 64),
    ) {
        let n = size(&shape);
        let data: Vec<f32> = (0..n).map(|i| vals[i % vals.len()] as f32 * 0.5).collect();
        let a = arr(&data, &shape);
        let ax = axis.map(|x| x % shape.len());
        let s = ops::sort(&a, ax.map(|x| x as isize)).unwrap();
        let got = s.to_vec::<f32>().unwrap();
        let idx = ops::argsort(&a, ax.map(|x| x as isize)).unwrap().to_vec::<u32>().unwrap();
        // Lines along the axis: (shape of the line, the flat positions of each line).
        let (lshape, lines): (Vec<usize>, Vec<Vec<usize>>) = match ax {
            None => (vec![n], vec![(0..n).collect()]),
            Some(ax) => {
                let mut os = shape.clone();
                os[ax] = 1;
                let lines = (0..size(&os)).map(|f| {
                    let mut i = unravel(f, &os);
                    (0..shape[ax]).map(|k| { i[ax] = k; ravel(&i, &shape) }).collect()
                }).collect();
                (shape.clone(), lines)
            }
        };
        let _ = lshape;
        for line in &lines {
            let g: Vec<f32> = line.iter().map(|&p| got[p]).collect();
            prop_assert!(g.windows(2).all(|w| w[0] <= w[1]), "not sorted: {:?}", g);
            let mut src: Vec<f32> = line.iter().map(|&p| data[p]).collect();
            src.sort_by(|x, y| x.partial_cmp(y).unwrap());
            prop_assert_eq!(&g, &src, "not a permutation");
            // argsort: a permutation of the line's positions that sorts it, stably.
            let ids: Vec<usize> = line.iter().map(|&p| idx[p] as usize).collect();
            let mut seen = ids.clone();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..line.len()).collect::<Vec<_>>());
            let by: Vec<f32> = ids.iter().map(|&k| data[line[k]]).collect();
            prop_assert_eq!(&by, &g);
            for w in 0..ids.len().saturating_sub(1) {
                if by[w] == by[w + 1] {
                    prop_assert!(ids[w] < ids[w + 1], "argsort not stable: {:?}", ids);
                }
            }
        }
    }
}

/// A random strided view (transpose, then slice) of an iota array: the array and its naive data.
fn view_strategy() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<Bound>)> {
    shape_and_perm().prop_flat_map(|(s, p)| {
        let n = s.len();
        (
            Just(s),
            Just(p),
            prop::collection::vec(bound_strategy(), 0..=n),
        )
    })
}

fn make_view(shape: &[usize], perm: &[usize], bounds: &[Bound]) -> (Array, Vec<f32>, Vec<usize>) {
    let data: Vec<f32> = (0..size(shape))
        .map(|i| ((i * 7919) % 23) as f32 - 11.0)
        .collect();
    let a = arr(&data, shape);
    let p: Vec<isize> = perm.iter().map(|&x| x as isize).collect();
    let t = ops::transpose(&a, Some(&p)).unwrap();
    let (td, tshape) = naive_transpose(&data, shape, perm);
    let v = ops::slice_opt(&t, bounds).unwrap();
    let (vd, vshape) = gather_product(&td, &tshape, &per_axis_slices(&tshape, bounds));
    (v, vd, vshape)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ops_on_strided_views((shape, perm, bounds) in view_strategy(), ax_pick in any::<usize>()) {
        let (v, vd, vs) = make_view(&shape, &perm, &bounds);
        prop_assert_eq!(v.shape(), vs.as_slice());
        // Element-wise with another view of the same shape (the view reversed on every axis).
        let rev_b: Vec<Bound> = vec![(None, None, -1); vs.len()];
        let r = ops::slice_opt(&v, &rev_b).unwrap();
        let (rd, _) = gather_product(&vd, &vs, &per_axis_slices(&vs, &rev_b));
        let s = ops::subtract(&v, &r).unwrap();
        let want: Vec<f32> = vd.iter().zip(&rd).map(|(x, y)| x - y).collect();
        prop_assert_eq!(s.to_vec::<f32>().unwrap(), want);
        // Unary and casts of views.
        let neg: Vec<f32> = vd.iter().map(|x| -x).collect();
        prop_assert_eq!(ops::negative(&v).unwrap().to_vec::<f32>().unwrap(), neg);
        let iv: Vec<i32> = vd.iter().map(|&x| x as i32).collect();
        prop_assert_eq!(v.astype(Dtype::I32).unwrap().to_vec::<i32>().unwrap(), iv);
        // Sum over everything (exact: small integers).
        let tot: f32 = vd.iter().sum();
        prop_assert_eq!(ops::sum(&v, Axes::All, false).unwrap().item::<f32>().unwrap(), tot);
        if vs.is_empty() {
            return Ok(());
        }
        let ax = ax_pick % vs.len();
        // Sum along one axis.
        let mut os = vs.clone();
        os[ax] = 1;
        let mut want = vec![0f32; size(&os)];
        for (f, &x) in vd.iter().enumerate() {
            let mut i = unravel(f, &vs);
            i[ax] = 0;
            want[ravel(&i, &os)] += x;
        }
        let got = ops::sum(&v, ax as isize, true).unwrap();
        prop_assert_eq!(got.to_vec::<f32>().unwrap(), want);
        // cumsum along the axis.
        let mut cs = vd.clone();
        for f in 0..vd.len() {
            let i = unravel(f, &vs);
            if i[ax] > 0 {
                let mut j = i.clone();
                j[ax] -= 1;
                cs[f] += cs[ravel(&j, &vs)];
            }
        }
        prop_assert_eq!(ops::cumsum(&v, Some(ax as isize), false, true).unwrap().to_vec::<f32>().unwrap(), cs);
        if vs[ax] == 0 {
            return Ok(());
        }
        // max / argmax along the axis.
        let mut mx = vec![f32::NEG_INFINITY; size(&os)];
        let mut am = vec![0u32; size(&os)];
        for (f, &x) in vd.iter().enumerate() {
            let i = unravel(f, &vs);
            let mut o = i.clone();
            o[ax] = 0;
            let o = ravel(&o, &os);
            if x > mx[o] { mx[o] = x; am[o] = i[ax] as u32; }
        }
        if size(&os) > 0 {
            prop_assert_eq!(ops::max(&v, ax as isize, true).unwrap().to_vec::<f32>().unwrap(), mx);
            prop_assert_eq!(ops::argmax(&v, Some(ax as isize), true).unwrap().to_vec::<u32>().unwrap(), am);
        }
        // take of the first and last element along the axis.
        let last = vs[ax] as i32 - 1;
        let ti = Array::from_slice(&[0i32, -1, last], &[3]).unwrap();
        let t = ops::take(&v, &ti, Some(ax as isize)).unwrap();
        let mut ts = vs.clone();
        ts[ax] = 3;
        let mut want = vec![];
        for f in 0..size(&ts) {
            let mut i = unravel(f, &ts);
            i[ax] = [0, vs[ax] - 1, vs[ax] - 1][i[ax]];
            want.push(vd[ravel(&i, &vs)]);
        }
        prop_assert_eq!(t.to_vec::<f32>().unwrap(), want);
        // sort along the axis: each line sorted.
        let so = ops::sort(&v, Some(ax as isize)).unwrap().to_vec::<f32>().unwrap();
        for f in 0..size(&os) {
            let mut i = unravel(f, &os);
            let mut line = vec![];
            let mut got = vec![];
            for k in 0..vs[ax] {
                i[ax] = k;
                line.push(vd[ravel(&i, &vs)]);
                got.push(so[ravel(&i, &vs)]);
            }
            line.sort_by(|a, b| a.partial_cmp(b).unwrap());
            prop_assert_eq!(got, line);
        }
    }

    #[test]
    fn matmul_matches_reference(m in 0usize..6, k in 0usize..6, n in 0usize..6, ta in any::<bool>(), tb in any::<bool>()) {
        let ad: Vec<f32> = (0..m * k).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
        let bd: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 5) as f32 - 2.0).collect();
        // Optionally build each operand as a transposed view of its transpose.
        let a = if ta {
            let (d, s) = naive_transpose(&ad, &[m, k], &[1, 0]);
            ops::transpose(&arr(&d, &s), None).unwrap()
        } else { arr(&ad, &[m, k]) };
        let b = if tb {
            let (d, s) = naive_transpose(&bd, &[k, n], &[1, 0]);
            ops::transpose(&arr(&d, &s), None).unwrap()
        } else { arr(&bd, &[k, n]) };
        let c = ops::matmul(&a, &b).unwrap();
        prop_assert_eq!(c.shape(), &[m, n]);
        let mut want = vec![0f32; m * n];
        for i in 0..m { for j in 0..n { for p in 0..k { want[i * n + j] += ad[i * k + p] * bd[p * n + j]; } } }
        prop_assert_eq!(c.to_vec::<f32>().unwrap(), want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `split` at any index list (unsorted, negative, past the end) gives NumPy's pieces:
    /// `a[0:i0], a[i0:i1], ..., a[ik:]` with Python slice semantics.
    #[test]
    fn split_at_arbitrary_indices(n in 0usize..8, idx in prop::collection::vec(-10isize..10, 0..5)) {
        let data = iota(n);
        let a = arr(&data, &[n]);
        let parts = ops::split(&a, SplitAt::Indices(idx.clone()), 0).unwrap();
        prop_assert_eq!(parts.len(), idx.len() + 1);
        let mut starts = vec![None];
        starts.extend(idx.iter().map(|&i| Some(i)));
        let mut stops: Vec<Option<isize>> = idx.iter().map(|&i| Some(i)).collect();
        stops.push(None);
        for (k, p) in parts.iter().enumerate() {
            let want: Vec<f32> = py_slice(starts[k], stops[k], 1, n).into_iter().map(|i| data[i]).collect();
            prop_assert_eq!(p.to_vec::<f32>().unwrap(), want, "piece {} of split({:?}) on {} elements", k, idx, n);
        }
    }
}

#[test]
fn sort_puts_nan_last() {
    let a = arr(&[3.0, f32::NAN, -1.0, 2.0, f32::NAN, 0.0], &[6]);
    let s = ops::sort(&a, None).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&s[..4], &[-1.0, 0.0, 2.0, 3.0]);
    assert!(s[4].is_nan() && s[5].is_nan(), "{s:?}");
}

#[test]
fn python_slice_reference_sanity() {
    // The reference itself, against values worked out with CPython.
    assert_eq!(py_slice(None, None, -1, 5), vec![4, 3, 2, 1, 0]);
    assert_eq!(py_slice(Some(-2), None, 1, 5), vec![3, 4]);
    assert_eq!(py_slice(Some(10), Some(-10), -2, 5), vec![4, 2, 0]);
    assert_eq!(py_slice(Some(-7), Some(3), 1, 5), vec![0, 1, 2]);
    assert_eq!(py_slice(Some(1), Some(-7), -1, 5), vec![1, 0]);
    assert_eq!(py_slice(None, Some(-6), -1, 5), vec![4, 3, 2, 1, 0]);
    assert_eq!(py_slice(Some(0), None, -1, 0), Vec::<usize>::new());
}
