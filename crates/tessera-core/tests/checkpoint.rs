//! Checkpointing: same gradients, lower peak memory (its own binary: memory counters are global).

use tessera_core::ops::{self, Axes};
use tessera_core::transforms::{checkpoint, grad, vmap};
use tessera_core::{Array, Dtype, Result, peak_memory, random, reset_peak_memory};

fn chain(x: &Array) -> Result<Array> {
    let mut y = x.clone();
    for _ in 0..3 {
        y = ops::sin(&ops::multiply(&y, &Array::scalar(1.1f64))?)?;
    }
    Ok(y)
}

#[test]
fn checkpoint_recomputes_instead_of_keeping_intermediates() {
    let x = random::uniform(-1.0, 1.0, &[1 << 20], Dtype::F64, Some(&random::key(1))).unwrap();
    x.eval().unwrap();
    let mb = 8.0 * (1 << 20) as f64 / 1e6;

    reset_peak_memory();
    let base = peak_memory();
    // Four segments of three ops: plain keeps all twelve intermediates for the backward pass.
    let plain = |x: &Array| -> Result<Array> { chain(&chain(&chain(&chain(x)?)?)?) };
    let g_plain = grad(
        |xs| ops::sum(&plain(&xs[0])?, Axes::All, false),
        &[x.clone()],
    )
    .unwrap();
    g_plain[0].eval().unwrap();
    let plain_peak = (peak_memory() - base) as f64 / 1e6;

    let block = checkpoint(|xs: &[Array]| chain(&xs[0]));
    reset_peak_memory();
    let base = peak_memory();
    let segmented = |x: &Array| -> Result<Array> {
        let mut h = x.clone();
        for _ in 0..4 {
            h = block(&[h])?;
        }
        Ok(h)
    };
    let g_ckpt = grad(
        |xs| ops::sum(&segmented(&xs[0])?, Axes::All, false),
        &[x.clone()],
    )
    .unwrap();
    g_ckpt[0].eval().unwrap();
    let ckpt_peak = (peak_memory() - base) as f64 / 1e6;

    let (a, b) = (
        g_plain[0].to_vec::<f64>().unwrap(),
        g_ckpt[0].to_vec::<f64>().unwrap(),
    );
    assert!(
        a.iter()
            .zip(&b)
            .all(|(p, q)| (p - q).abs() <= 1e-12 * p.abs().max(1.0))
    );
    // The plain gradient keeps the forward intermediates alive until the backward pass uses them.
    eprintln!("peak: checkpointed {ckpt_peak:.0} MB, plain {plain_peak:.0} MB");
    assert!(
        ckpt_peak < plain_peak * 0.6,
        "checkpointed peak {ckpt_peak:.0} MB vs plain {plain_peak:.0} MB ({mb:.0} MB per array)"
    );
}

#[test]
fn custom_ops_compose_with_vmap_and_second_derivatives() {
    let block = checkpoint(|xs: &[Array]| ops::multiply(&ops::exp(&xs[0])?, &xs[0]));
    let x = Array::from_slice(&[0.3f64, -0.7, 1.2], &[3]).unwrap();
    // d2/dx2 (x e^x) = (x + 2) e^x
    let d2 = grad(
        |xs| {
            let g = grad(
                |ys| ops::sum(&block(ys)?, Axes::All, false),
                &[xs[0].clone()],
            )?;
            ops::sum(&g[0], Axes::All, false)
        },
        &[x.clone()],
    )
    .unwrap();
    for (g, v) in d2[0]
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .zip([0.3f64, -0.7, 1.2])
    {
        assert!((g - (v + 2.0) * v.exp()).abs() < 1e-12);
    }
    let m = ops::reshape(&x, &[3, 1]).unwrap();
    let r = vmap(|xs| Ok(vec![block(xs)?]), &[m], &[Some(0)], &[0]).unwrap();
    let expect: Vec<f64> = [0.3f64, -0.7, 1.2].iter().map(|v| v * v.exp()).collect();
    for (a, b) in r[0].to_vec::<f64>().unwrap().iter().zip(&expect) {
        assert!((a - b).abs() < 1e-12);
    }
}
