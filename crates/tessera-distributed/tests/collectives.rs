//! Collectives on 2 to 5 ranks, each rank its own process over loopback TCP (see `common`):
//! every collective, every dtype, sizes from one element to 256 MiB on both sides of the
//! small-message switch, results against a local reference, bit-identical float sums,
//! gradients, vmap, compile, sub-groups, and failures (killed, hung and unauthenticated ranks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::reference::check_all;
use common::{Lcg, Opts, collect, report, run_ok, scenario, signal, spawn_ranks};
use std::time::{Duration, Instant};
use tessera_core::transforms::{compile, grad, vmap};
use tessera_core::{Array, Dtype, ops};
use tessera_distributed::{Backend, Group, init};

/// The entry point of every rank process (a no-op when run as an ordinary test).
#[test]
fn rank_worker() {
    let Some(name) = scenario() else { return };
    let g = init(Backend::Any).expect("init");
    match name.as_str() {
        "all_dtypes" => {
            for (case, len) in [1usize, 7, 20_000].into_iter().enumerate() {
                check_all(&g, case as u64, len);
            }
        }
        "all_dtypes_large" => check_all(&g, 3, 300_001),
        "small_algorithm" => report(g.small_all_reduce().unwrap_or("none")),
        // Past the size from which same-host ranks read each other's memory directly, for
        // every dtype (4 MiB + 5 elements: even one-byte dtypes cross it).
        "all_dtypes_direct_reads" => check_all(&g, 4, (4 << 20) + 5),
        "float_bits" => {
            for len in [1000usize, 3_000_001] {
                let x = Lcg(7 + g.rank() as u64).floats(len);
                let y = g.all_sum(&Array::from_slice(&x, &[len]).unwrap()).unwrap();
                let v = y.to_vec::<f32>().unwrap();
                let h = v.iter().fold(0xcbf29ce484222325u64, |h, x| {
                    (h ^ x.to_bits() as u64).wrapping_mul(0x100000001b3)
                });
                let n = g.size();
                let exact: Vec<f64> = (0..n).map(|r| Lcg(7 + r as u64).floats(len)).fold(
                    vec![0.0; len],
                    |mut acc, x| {
                        acc.iter_mut().zip(x).for_each(|(a, b)| *a += b as f64);
                        acc
                    },
                );
                let err = v
                    .iter()
                    .zip(&exact)
                    .map(|(a, e)| (*a as f64 - e).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-5, "max error {err}");
                report(format!("hash {len} {h:x}"));
            }
        }
        "mib256" => {
            let len = 64 << 20; // f32: 256 MiB per rank
            let x = ops::full(&[len], (g.rank() + 1) as f64, Dtype::F32).unwrap();
            let y = g.all_sum(&x).unwrap();
            let want = (g.size() * (g.size() + 1) / 2) as f32;
            let mn = ops::min(&y, ops::Axes::All, false)
                .unwrap()
                .item::<f32>()
                .unwrap();
            let mx = ops::max(&y, ops::Axes::All, false)
                .unwrap()
                .item::<f32>()
                .unwrap();
            assert_eq!((mn, mx), (want, want));
            report("ok");
        }
        "gradients" => gradients(&g),
        "pipeline_grads" => pipeline_grads(&g),
        "data_parallel" => data_parallel(&g),
        "vmap_compile" => vmap_compile(&g),
        "pipeline" => pipeline(&g),
        "check_links" => {
            let stats =
                tessera_distributed::check::check_links(g.handle().0.as_ref(), 1 << 16).unwrap();
            assert_eq!(stats.len(), g.size() * (g.size() - 1) / 2);
            for l in &stats {
                assert!(l.latency_us > 0.0 && l.latency_us.is_finite(), "{l:?}");
                assert!(
                    l.bandwidth_gbs > 0.0 && l.bandwidth_gbs.is_finite(),
                    "{l:?}"
                );
                report(l.transport.name());
            }
        }
        "split" => {
            split(&g);
            // A second init gives the same world group (not a new set of connections).
            let again = init(Backend::Any).expect("second init");
            assert_eq!(again.rank(), g.rank());
            assert_eq!(again.handle(), g.handle());
        }
        "die_mid_all_sum" => {
            // Rank 1 announces the collective, then the parent kills it while the others
            // are inside the same all_sum.
            let x = ops::ones(&[32 << 20], Dtype::F32).unwrap();
            x.eval().unwrap();
            report("entering");
            let t = Instant::now();
            let e = g.all_sum(&x).unwrap().eval();
            report(format!(
                "{:.1}s {}",
                t.elapsed().as_secs_f64(),
                e.unwrap_err()
            ));
        }
        "stall" => {
            let x = ops::ones(&[100], Dtype::F32).unwrap();
            x.eval().unwrap();
            report("entering");
            let victim = std::env::var("TESSERA_TEST_VICTIM").map_or(1, |v| v.parse().unwrap());
            if g.rank() == victim {
                // The victim never joins: it hangs with its connections open (and is stopped
                // with SIGSTOP, then killed, by the parent).
                loop {
                    std::thread::park();
                }
            }
            let t = Instant::now();
            let e = g.all_sum(&x).unwrap().eval();
            report(format!(
                "{:.1}s {}",
                t.elapsed().as_secs_f64(),
                e.unwrap_err()
            ));
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn every_collective_every_dtype_on_2_to_5_ranks() {
    for n in 2..=5 {
        // 1 and 7 elements take the direct exchange; 20_000 take the ring for 8-byte dtypes.
        run_ok(n, "all_dtypes", &Opts::default());
    }
    // Several ring chunks, an element count no rank count divides.
    run_ok(3, "all_dtypes_large", &Opts::default());
}

/// Small all-reduces by the direct exchange and by recursive doubling (ranks past a power of
/// two folded in and out) give the reference results for every dtype and reduction, and
/// bit-identical float sums on every rank; an unknown setting is a clear error at `init`.
#[test]
fn both_small_all_reduce_algorithms_give_the_same_results() {
    let with = |v: &str| Opts {
        env: vec![("TESSERA_SMALL_ALLREDUCE".into(), v.into())],
        ..Opts::default()
    };
    for alg in ["direct", "doubling"] {
        for n in [3, 5] {
            let got = run_ok(n, "small_algorithm", &with(alg));
            assert!(got.iter().all(|r| r == &[alg]), "{alg} on {n}: {got:?}");
            run_ok(n, "all_dtypes", &with(alg));
        }
        let res = run_ok(3, "float_bits", &with(alg));
        assert!(res.iter().all(|r| r == &res[0]), "{alg}: {res:?}");
    }
    // Two ranks have one exchange either way.
    assert_eq!(
        run_ok(2, "small_algorithm", &with("doubling")),
        [["direct"], ["direct"]]
    );
    let outs = collect(
        spawn_ranks(3, "small_algorithm", &with("sideways")),
        Duration::from_secs(60),
    );
    assert!(
        outs.iter()
            .all(|o| o.code != Some(0) && o.results.is_empty())
    );
    // (The worker prints the error with `{:?}`, which escapes the quotes.)
    let err = &outs[0].stderr;
    assert!(
        err.contains("TESSERA_SMALL_ALLREDUCE") && err.contains("use direct, doubling or auto"),
        "{err}"
    );
}

/// Direct reads of the peers' memory (large messages between same-host ranks) give the
/// reference results for every dtype and reduction; 2 ranks sum in place, 3 accumulate in rank
/// order. (The ring they replace is covered at these sizes by `all_sum_of_256_mib` and the TCP
/// test.)
#[test]
fn direct_memory_reads_give_the_same_results() {
    for n in [2, 3] {
        run_ok(n, "all_dtypes_direct_reads", &Opts::default());
    }
}

/// `tessera cluster check` measures every pair and names how its data travels: shared memory
/// on one host (with direct reads where the system allows them), TCP when told not to share.
#[test]
fn link_check_measures_and_names_every_link() {
    for r in run_ok(3, "check_links", &Opts::default()) {
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|t| t.starts_with("shared memory")), "{r:?}");
    }
    let tcp = Opts {
        env: vec![("TESSERA_SHM".into(), "0".into())],
        ..Opts::default()
    };
    for r in run_ok(3, "check_links", &tcp) {
        assert_eq!(r, ["tcp", "tcp", "tcp"]);
    }
}

#[test]
fn the_tcp_path_gives_the_same_results() {
    // Same-host ranks normally use shared memory; force TCP.
    let opts = Opts {
        env: vec![("TESSERA_SHM".into(), "0".into())],
        ..Opts::default()
    };
    run_ok(2, "all_dtypes", &opts);
    run_ok(3, "all_dtypes_large", &opts);
    run_ok(3, "float_bits", &opts);
    run_ok(4, "pipeline", &opts);
    // One connection per pair, and four (large messages split across them).
    for k in ["1", "4"] {
        let opts = Opts {
            env: vec![
                ("TESSERA_SHM".into(), "0".into()),
                ("TESSERA_CONNECTIONS".into(), k.into()),
            ],
            ..Opts::default()
        };
        run_ok(3, "all_dtypes_large", &opts);
        run_ok(3, "pipeline", &opts);
    }
}

#[test]
fn encrypted_traffic_gives_the_same_results() {
    let opts = Opts {
        encrypt: true,
        ..Opts::default()
    };
    run_ok(3, "all_dtypes", &opts);
}

/// Float sums depend on the order of additions: every rank must get the same bits, close to
/// the exact sum.
#[test]
fn float_sums_are_bit_identical_on_every_rank() {
    for n in [2, 3, 4] {
        let res = run_ok(n, "float_bits", &Opts::default());
        for r in 1..n {
            assert_eq!(res[r], res[0], "rank {r} of {n} differs from rank 0");
        }
    }
}

#[test]
fn all_sum_of_256_mib() {
    let res = run_ok(3, "mib256", &Opts::default());
    assert!(res.iter().all(|r| r == &["ok"]));
}

#[test]
fn gradients_flow_through_collectives() {
    run_ok(3, "gradients", &Opts::default());
}

#[test]
fn gradients_flow_back_through_send_and_recv() {
    run_ok(2, "pipeline_grads", &Opts::default());
}

#[test]
fn data_parallel_sgd_equals_training_on_all_the_data() {
    for n in [2, 3] {
        run_ok(n, "data_parallel", &Opts::default());
    }
}

#[test]
fn vmap_and_compile_through_collectives() {
    run_ok(2, "vmap_compile", &Opts::default());
}

#[test]
fn send_and_recv_along_a_pipeline() {
    let res = run_ok(4, "pipeline", &Opts::default());
    assert_eq!(res[3], vec!["received 4"]);
}

#[test]
fn split_makes_independent_subgroups() {
    run_ok(4, "split", &Opts::default());
    run_ok(5, "split", &Opts::default());
}

#[test]
fn a_group_of_one_makes_collectives_no_ops() {
    let g = Group::solo();
    let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    assert_eq!(
        g.all_sum(&x).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 2.0]
    );
    assert_eq!(g.all_gather(&x).unwrap().shape(), &[2]);
    assert!(g.send(&x, 0).is_err());
    g.barrier().unwrap();
}

#[test]
fn a_wrong_secret_is_refused_and_nothing_is_delivered() {
    let opts = Opts {
        timeout_s: 3.0,
        secrets: Some(vec!["the real secret".into(), "an intruder's guess".into()]),
        ..Opts::default()
    };
    let outs = collect(spawn_ranks(2, "all_dtypes", &opts), Duration::from_secs(60));
    // Neither joins (so no data is ever exchanged); both say why.
    assert_ne!(outs[0].code, Some(0));
    assert_ne!(outs[1].code, Some(0));
    assert!(
        outs[0].stderr.contains("refused a connection"),
        "{}",
        outs[0].stderr
    );
    assert!(
        outs[0].stderr.contains("does not know the cluster secret"),
        "{}",
        outs[0].stderr
    );
    assert!(outs[0].stderr.contains("rank 1") && outs[0].stderr.contains("did not connect"));
    assert!(outs[1].stderr.contains("secret"), "{}", outs[1].stderr);
    assert!(outs.iter().all(|o| o.results.is_empty()));
}

/// Waits until every rank printed its "entering" line, then applies `act` to `victim`.
fn run_fault(n: usize, scenario: &str, timeout_s: f64, victim: usize, sig: i32) -> Vec<String> {
    run_fault_env(n, scenario, timeout_s, victim, sig, &[])
}

fn run_fault_env(
    n: usize,
    scenario: &str,
    timeout_s: f64,
    victim: usize,
    sig: i32,
    env: &[(&str, &str)],
) -> Vec<String> {
    let opts = Opts {
        timeout_s,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Opts::default()
    };
    let mut children = spawn_ranks(n, scenario, &opts);
    // Read the victim's stdout up to its "entering" line, then strike.
    let mut out = std::io::BufReader::new(children[victim].stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "victim ended early"
        );
        if line.trim() == "RESULT entering" {
            break;
        }
    }
    let pid = children[victim].id();
    signal(pid, sig);
    let victim_child = children.remove(victim);
    let outs = collect(children, Duration::from_secs(60));
    // A stopped victim is killed now that the others have finished.
    signal(pid, 9);
    let mut v = victim_child;
    let _ = v.wait();
    outs.into_iter()
        .map(|o| {
            assert_eq!(o.code, Some(0), "{}", o.stderr);
            o.results.last().cloned().unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_rank_killed_mid_all_sum_fails_the_others_naming_it() {
    let start = Instant::now();
    // 128 MiB all_sum on 4 ranks; rank 2 is killed once it is inside; the timeout is long (60 s)
    // so only prompt detection passes.
    let res = run_fault(4, "die_mid_all_sum", 60.0, 2, 9);
    assert!(start.elapsed() < Duration::from_secs(30));
    for r in res {
        assert!(r.contains("rank 2"), "{r}");
    }
}

#[test]
fn a_rank_killed_mid_all_sum_over_tcp_fails_the_others_naming_it() {
    let start = Instant::now();
    let res = run_fault_env(4, "die_mid_all_sum", 60.0, 2, 9, &[("TESSERA_SHM", "0")]);
    assert!(start.elapsed() < Duration::from_secs(30));
    for r in res {
        assert!(r.contains("rank 2"), "{r}");
    }
}

#[test]
fn a_stalled_rank_fails_the_others_within_the_timeout() {
    // Rank 1 is stopped (SIGSTOP): connections open, no progress. The others must give up after
    // the 1.5 s timeout, naming it.
    let res = run_fault(3, "stall", 1.5, 1, 19);
    for r in res {
        let secs: f64 = r.split('s').next().unwrap().parse().unwrap();
        assert!(secs < 10.0, "{r}");
        assert!(r.contains("rank 1"), "{r}");
    }
}

/// Whichever rank hangs, and whichever algorithm the small all-reduce takes (recursive doubling
/// has ranks wait on peers that wait on others), every other rank fails naming the hung one.
#[test]
fn a_stalled_rank_is_named_by_every_other_under_both_small_algorithms() {
    for alg in ["direct", "doubling"] {
        for victim in 0..3 {
            let v = victim.to_string();
            let env = [
                ("TESSERA_SMALL_ALLREDUCE", alg),
                ("TESSERA_TEST_VICTIM", v.as_str()),
            ];
            let res = run_fault_env(3, "stall", 1.0, victim, 19, &env);
            for r in res {
                let secs: f64 = r.split('s').next().unwrap().parse().unwrap();
                assert!(secs < 10.0, "{alg}, victim {victim}: {r}");
                assert!(
                    r.contains(&format!("rank {victim}")),
                    "{alg}, victim {victim}: {r}"
                );
            }
        }
    }
}

/// Two pipeline stages. Rank 0 computes h = 3x and sends it; rank 1 receives y (= h) and
/// computes L = w · sum(y²). Backward, rank 1's receive sends dL/dy = 2wy back and rank 0's send
/// receives it: dL/dx = 3 · 2wy = 18wx on rank 0, dL/dw = sum(y²) = 9 sum(x²) on rank 1. Each
/// rank differentiates only its own stage; a second round checks that the messages stay paired.
fn pipeline_grads(g: &Group) {
    let xv = [1.0f64, -2.0, 0.5];
    let w = 1.5f64;
    for round in 0..2 {
        let scale = (round + 1) as f64;
        let x: Vec<f64> = xv.iter().map(|v| v * scale).collect();
        if g.rank() == 0 {
            let xa = Array::from_slice(&x, &[3]).unwrap();
            // The stage's output is the send itself; its own cotangent is zero.
            let (_, gs) = tessera_core::transforms::vjp(
                |xs| {
                    let h = ops::multiply(&xs[0], &Array::scalar(3.0f64))?;
                    Ok(vec![g.send(&h, 1)?])
                },
                std::slice::from_ref(&xa),
                &[ops::zeros(&[3], Dtype::F64).unwrap()],
            )
            .unwrap();
            let want: Vec<f64> = x.iter().map(|v| 18.0 * w * v).collect();
            assert_eq!(gs[0].to_vec::<f64>().unwrap(), want, "dL/dx");
            // Forward mode: the tangent 3t goes along with h.
            let t = Array::from_slice(&[0.5f64, 1.0, -1.0], &[3]).unwrap();
            let (_, ts) = tessera_core::transforms::jvp(
                |xs| {
                    let h = ops::multiply(&xs[0], &Array::scalar(3.0f64))?;
                    Ok(vec![g.send(&h, 1)?])
                },
                std::slice::from_ref(&xa),
                std::slice::from_ref(&t),
            )
            .unwrap();
            assert_eq!(
                ts[0].to_vec::<f64>().unwrap(),
                vec![1.5, 3.0, -3.0],
                "tangent of h"
            );
        } else {
            let wa = Array::from_slice(&[w], &[1]).unwrap();
            let gs = grad(
                |ws| {
                    let y = g.recv(&[3], Dtype::F64, 0)?;
                    let s = ops::sum(&ops::square(&y)?, ops::Axes::All, true)?;
                    ops::sum(&ops::multiply(&s, &ws[0])?, ops::Axes::All, false)
                },
                std::slice::from_ref(&wa),
            )
            .unwrap();
            let want: f64 = x.iter().map(|v| 9.0 * v * v).sum();
            assert_eq!(gs[0].to_vec::<f64>().unwrap(), vec![want], "dL/dw");
            // Forward mode: dL = tw · sum(y²) + w · 2 sum(y · ty), with ty = 3t from rank 0.
            let tw = Array::from_slice(&[0.25f64], &[1]).unwrap();
            let (_, ts) = tessera_core::transforms::jvp(
                |ws| {
                    let y = g.recv(&[3], Dtype::F64, 0)?;
                    let s = ops::sum(&ops::square(&y)?, ops::Axes::All, true)?;
                    Ok(vec![ops::sum(
                        &ops::multiply(&s, &ws[0])?,
                        ops::Axes::All,
                        false,
                    )?])
                },
                std::slice::from_ref(&wa),
                std::slice::from_ref(&tw),
            )
            .unwrap();
            let ty = [1.5f64, 3.0, -3.0];
            let y: Vec<f64> = x.iter().map(|v| 3.0 * v).collect();
            let want = 0.25 * y.iter().map(|v| v * v).sum::<f64>()
                + w * 2.0 * y.iter().zip(ty).map(|(a, b)| a * b).sum::<f64>();
            let got = ts[0].to_vec::<f64>().unwrap()[0];
            assert!((got - want).abs() < 1e-12, "tangent of L: {got} vs {want}");
        }
    }
    report("ok");
}

fn gradients(g: &Group) {
    let n = g.size();
    let r = g.rank();
    let x = Array::from_slice(&[1.0f64 + r as f64, -2.0 * r as f64], &[2]).unwrap();
    // L = Σ_ranks sum(all_sum(x)²): dL/dx_r = 2 n · all_sum(x).
    let gs = grad(
        |xs| ops::sum(&ops::square(&g.all_sum(&xs[0])?)?, ops::Axes::All, false),
        std::slice::from_ref(&x),
    )
    .unwrap();
    let total = [
        (0..n).map(|k| 1.0 + k as f64).sum::<f64>(),
        (0..n).map(|k| -2.0 * k as f64).sum(),
    ];
    let want: Vec<f64> = total.iter().map(|t| 2.0 * n as f64 * t).collect();
    assert_eq!(gs[0].to_vec::<f64>().unwrap(), want);

    // L = Σ_j sum(c_j · all_gather(x)): dL/dx_r sums every rank's cotangent at block r.
    let c = |j: usize| -> Vec<f64> {
        (0..2 * n)
            .map(|i| (j + 1) as f64 * 10.0 + i as f64)
            .collect()
    };
    let cj = Array::from_slice(&c(r), &[2 * n]).unwrap();
    let gs = grad(
        |xs| {
            ops::sum(
                &ops::multiply(&cj, &g.all_gather(&xs[0])?)?,
                ops::Axes::All,
                false,
            )
        },
        std::slice::from_ref(&x),
    )
    .unwrap();
    let want: Vec<f64> = (0..2)
        .map(|i| (0..n).map(|j| c(j)[2 * r + i]).sum())
        .collect();
    assert_eq!(gs[0].to_vec::<f64>().unwrap(), want);

    // L = Σ_j sum(c_j · sum_scatter(z)): block b of dL/dz is rank b's c.
    let z = Array::from_slice(&vec![1.0f64; 2 * n], &[2 * n]).unwrap();
    let cj = Array::from_slice(&c(r)[..2], &[2]).unwrap();
    let gs = grad(
        |xs| {
            ops::sum(
                &ops::multiply(&cj, &g.sum_scatter(&xs[0])?)?,
                ops::Axes::All,
                false,
            )
        },
        std::slice::from_ref(&z),
    )
    .unwrap();
    let want: Vec<f64> = (0..n).flat_map(|b| c(b)[..2].to_vec()).collect();
    assert_eq!(gs[0].to_vec::<f64>().unwrap(), want);

    // all_max: the ranks holding the maximum share the summed cotangent. Element 0 is maximal
    // on the last rank only; element 1 (equal everywhere) is shared by all n.
    let m = Array::from_slice(&[r as f64, 5.0], &[2]).unwrap();
    let gs = grad(
        |xs| ops::sum(&g.all_max(&xs[0])?, ops::Axes::All, false),
        std::slice::from_ref(&m),
    )
    .unwrap();
    let want = [if r == n - 1 { n as f64 } else { 0.0 }, 1.0];
    assert_eq!(gs[0].to_vec::<f64>().unwrap(), want.to_vec());

    // Central finite differences of the total loss through all_sum, seen from this rank:
    // L(x_r) = Σ_j sum(w_j · tanh(all_sum(x))), perturbing only this rank's input.
    let w = |j: usize| Array::from_slice(&[0.3 * (j + 1) as f64, -0.7], &[2]).unwrap();
    let loss_local = |x: &Array| -> tessera_core::Result<Array> {
        ops::sum(
            &ops::multiply(&w(r), &ops::tanh(&g.all_sum(x)?)?)?,
            ops::Axes::All,
            false,
        )
    };
    let gs = grad(|xs| loss_local(&xs[0]), std::slice::from_ref(&x)).unwrap();
    let analytic = gs[0].to_vec::<f64>().unwrap();
    // Every rank evaluates the total loss for the same perturbations (rank p's input moved by
    // ±h in element i), collectively.
    let h = 1e-6;
    for p in 0..n {
        for i in 0..2 {
            let mut fd = 0.0;
            for sign in [1.0, -1.0] {
                let mut xv = x.to_vec::<f64>().unwrap();
                if p == r {
                    xv[i] += sign * h;
                }
                let xp = Array::from_slice(&xv, &[2]).unwrap();
                let total = g.all_sum(&loss_local(&xp).unwrap()).unwrap();
                fd += sign * total.item::<f64>().unwrap();
            }
            if p == r {
                let fd = fd / (2.0 * h);
                assert!(
                    (fd - analytic[i]).abs() < 1e-6,
                    "fd {fd} vs {}",
                    analytic[i]
                );
            }
        }
    }
}

fn vmap_compile(g: &Group) {
    let r = g.rank() as f32;
    // vmap over a batch of 3: all_gather per example.
    let xb = Array::from_slice(
        &[r, r + 10.0, r + 20.0, r + 30.0, r + 40.0, r + 50.0],
        &[3, 2],
    )
    .unwrap();
    let y = vmap(
        |a| Ok(vec![g.all_gather(&a[0])?]),
        std::slice::from_ref(&xb),
        &[Some(0)],
        &[0],
    )
    .unwrap();
    assert_eq!(y[0].shape(), &[3, 4]);
    assert_eq!(
        y[0].to_vec::<f32>().unwrap(),
        vec![
            0.0, 10.0, 1.0, 11.0, 20.0, 30.0, 21.0, 31.0, 40.0, 50.0, 41.0, 51.0
        ]
    );
    let s = vmap(|a| Ok(vec![g.all_sum(&a[0])?]), &[xb], &[Some(0)], &[0]).unwrap();
    assert_eq!(
        s[0].to_vec::<f32>().unwrap(),
        vec![1.0, 21.0, 41.0, 61.0, 81.0, 101.0]
    );
    // A compiled function runs its collectives on every call: never folded to a constant,
    // never two merged into one.
    let f = compile(|a: &[Array]| {
        let s = g.all_sum(&a[0])?;
        let t = g.all_sum(&a[0])?;
        Ok(vec![ops::add(&s, &t)?])
    });
    for call in 0..3 {
        let x = Array::from_slice(&[r + call as f32], &[1]).unwrap();
        let out = f.call(&[x]).unwrap();
        assert_eq!(
            out[0].item::<f32>().unwrap(),
            2.0 * (1.0 + 2.0 * call as f32)
        );
    }
    // A receive with no inputs inside a compiled function is not a constant either.
    let peer = 1 - g.rank();
    let h = compile(|a: &[Array]| {
        let sent = g.send(&a[0], peer)?;
        let got = g.recv(&[1], Dtype::F32, peer)?;
        Ok(vec![sent, got])
    });
    for call in 0..2 {
        let x = Array::from_slice(&[r * 100.0 + call as f32], &[1]).unwrap();
        // Both ranks send first, then receive: one-element messages fit the sockets' buffers.
        let out = h.call(&[x]).unwrap();
        tessera_core::eval(&out).unwrap();
        assert_eq!(
            out[1].item::<f32>().unwrap(),
            peer as f32 * 100.0 + call as f32
        );
    }
}

fn pipeline(g: &Group) {
    let (n, r) = (g.size(), g.rank());
    let len = 300_000; // 1.2 MB: several frames
    let got = if r == 0 {
        Array::from_slice(&vec![0.0f32; len], &[len]).unwrap()
    } else {
        g.recv(&[len], Dtype::F32, r - 1).unwrap()
    };
    let next = ops::add(&got, &Array::from_slice(&[1.0f32], &[1]).unwrap()).unwrap();
    if r + 1 < n {
        g.send(&next, r + 1).unwrap().eval().unwrap();
    } else {
        let v = next.to_vec::<f32>().unwrap();
        assert!(v.iter().all(|&x| x == n as f32));
        report(format!("received {n}"));
    }
}

fn split(g: &Group) {
    let (n, r) = (g.size(), g.rank());
    // Even and odd ranks; keys reverse the order inside each group.
    let sub = g.split((r % 2) as u32, -(r as i64)).unwrap();
    let members: Vec<usize> = (0..n).filter(|k| k % 2 == r % 2).rev().collect();
    assert_eq!(sub.size(), members.len());
    assert_eq!(sub.rank(), members.iter().position(|&k| k == r).unwrap());
    let x = Array::from_slice(&[r as i32], &[1]).unwrap();
    let s = sub.all_sum(&x).unwrap().item::<i32>().unwrap();
    assert_eq!(s, members.iter().sum::<usize>() as i32);
    let gathered = sub.all_gather(&x).unwrap().to_vec::<i32>().unwrap();
    assert_eq!(
        gathered,
        members.iter().map(|&k| k as i32).collect::<Vec<_>>()
    );
    // The parent still works after its children ran, and a second split gets its own id.
    let t = g.all_sum(&x).unwrap().item::<i32>().unwrap();
    assert_eq!(t, (n * (n - 1) / 2) as i32);
    let all = g.split(0, r as i64).unwrap();
    assert_eq!(all.rank(), r);
    assert_eq!(all.all_sum(&x).unwrap().item::<i32>().unwrap(), t);
}

/// Linear regression by SGD, each rank on its own batch with gradients averaged by all_sum:
/// must follow exactly the path of SGD on all ranks' data together (computed here in plain f64
/// from every rank's batch).
fn data_parallel(g: &Group) {
    let (n, r) = (g.size(), g.rank());
    let (d, b, lr, steps) = (8usize, 16usize, 0.1f64, 10);
    let data = |k: usize| -> (Vec<f64>, Vec<f64>) {
        let mut rng = Lcg(500 + k as u64);
        let x: Vec<f64> = rng.floats(b * d).into_iter().map(f64::from).collect();
        let y: Vec<f64> = rng.floats(b).into_iter().map(f64::from).collect();
        (x, y)
    };
    let (xv, yv) = data(r);
    let x = Array::from_slice(&xv, &[b, d]).unwrap();
    let y = Array::from_slice(&yv, &[b, 1]).unwrap();
    let mut w = Array::from_slice(&vec![0.0f64; d], &[d, 1]).unwrap();
    let inv_n = Array::from_slice(&[1.0 / n as f64], &[1]).unwrap();
    let step_lr = Array::from_slice(&[lr], &[1]).unwrap();
    for _ in 0..steps {
        let grads = grad(
            |ws| {
                let err = ops::subtract(&ops::matmul(&x, &ws[0])?, &y)?;
                ops::mean(&ops::square(&err)?, ops::Axes::All, false)
            },
            std::slice::from_ref(&w),
        )
        .unwrap();
        let avg = ops::multiply(&g.all_sum(&grads[0]).unwrap(), &inv_n).unwrap();
        w = ops::subtract(&w, &ops::multiply(&avg, &step_lr).unwrap()).unwrap();
        w.eval().unwrap();
    }
    // The reference: full-batch gradient of the mean loss over all n * b samples.
    let all: Vec<(Vec<f64>, Vec<f64>)> = (0..n).map(data).collect();
    let mut wr = vec![0.0f64; d];
    for _ in 0..steps {
        let mut gsum = vec![0.0f64; d];
        for (xk, yk) in &all {
            for i in 0..b {
                let pred: f64 = (0..d).map(|j| xk[i * d + j] * wr[j]).sum();
                let e = pred - yk[i];
                for j in 0..d {
                    gsum[j] += 2.0 * e * xk[i * d + j];
                }
            }
        }
        for j in 0..d {
            wr[j] -= lr * gsum[j] / (n * b) as f64;
        }
    }
    let got = w.to_vec::<f64>().unwrap();
    for j in 0..d {
        assert!(
            (got[j] - wr[j]).abs() < 1e-12,
            "w[{j}] {} vs {}",
            got[j],
            wr[j]
        );
    }
}
