use tessera_core::*;
#[test]
fn repro() {
    let n = 2 << 20;
    let v = vec![1.0f32; n];
    let a = Array::from_slice(&v, &[n]).unwrap();
    let tmp = Array::from_slice(&v, &[n]).unwrap();
    drop(tmp); // its 8 MB block goes to the cache
    let active = active_memory();
    set_memory_limit(active + (1 << 20));
    let c = ops::add(&a, &a).unwrap();
    let r = c.eval();
    println!(
        "limit {} active-before {} result {:?} active-after {}",
        active + (1 << 20),
        active,
        r,
        active_memory()
    );
    assert!(
        r.is_err(),
        "limit bypassed: active {} > limit {}",
        active_memory(),
        active + (1 << 20)
    );
}
