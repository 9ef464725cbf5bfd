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
