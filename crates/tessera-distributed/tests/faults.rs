//! Faults on the wire, injected by a TCP proxy between two ranks (see `common::proxy`): added
//! latency still gives right answers; a stalled, cut, truncated or corrupted connection fails
//! both ranks with an error naming the other one, never a hang and never wrong data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::proxy::{self, Fault};
use common::{Opts, collect, report, scenario, spawn_ranks};
use std::time::{Duration, Instant};
use tessera_core::{Dtype, ops};
use tessera_distributed::{Backend, init};

/// Every rank process runs this.
#[test]
fn rank_worker() {
    let Some(name) = scenario() else { return };
    assert_eq!(name, "sums");
    let g = init(Backend::Any).expect("init");
    // Ten 4 MiB all_sums (ring), then small ones (direct exchange), checking every result.
    let t = Instant::now();
    for i in 0..12 {
        let len = if i < 10 { 1 << 20 } else { 100 };
        let x = ops::full(&[len], (g.rank() + i) as f64, Dtype::F32).unwrap();
        match g
            .all_sum(&x)
            .and_then(|y| ops::min(&y, ops::Axes::All, false))
        {
            Ok(m) => match m.item::<f32>() {
                Ok(v) => assert_eq!(v, (1 + 2 * i) as f32, "wrong data in sum {i}"),
                Err(e) => {
                    report(format!("{:.1}s {e}", t.elapsed().as_secs_f64()));
                    return;
                }
            },
            Err(e) => panic!("building the graph failed: {e}"),
        }
    }
    report("ok");
}

/// Two ranks; rank 1 reaches rank 0 through the proxy (rank 0 also answers through it, as the
/// connection is rank 1's).
fn run(fault: Fault, timeout_s: f64) -> Vec<String> {
    let ports = tessera_distributed::launch::free_ports(2).unwrap();
    let real: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let proxy_port = proxy::start(real[0].clone(), fault);
    let through_proxy = vec![format!("127.0.0.1:{proxy_port}"), real[1].clone()];
    let opts = Opts {
        timeout_s,
        hosts: Some(vec![real.clone(), through_proxy]),
        // The proxy sits on TCP: keep these same-host ranks off shared memory.
        env: vec![("TESSERA_SHM".into(), "0".into())],
        ..Opts::default()
    };
    let outs = collect(spawn_ranks(2, "sums", &opts), Duration::from_secs(60));
    outs.into_iter()
        .map(|o| {
            assert_eq!(o.code, Some(0), "{}", o.stderr);
            o.results.last().cloned().unwrap_or_default()
        })
        .collect()
}

// The handshake takes 164 bytes; faults at 100 KB hit the first all_sum's frames.
const AT: usize = 100_000;

#[test]
fn added_latency_still_gives_right_answers() {
    let res = run(Fault::Latency(Duration::from_millis(5)), 30.0);
    assert_eq!(res, vec!["ok", "ok"]);
}

#[test]
fn a_cut_connection_fails_both_ranks_naming_the_peer() {
    let t = Instant::now();
    let res = run(Fault::Cut(AT), 30.0);
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(res[0].contains("rank 1"), "{}", res[0]);
    assert!(res[1].contains("rank 0"), "{}", res[1]);
}

#[test]
fn a_frame_cut_in_the_middle_is_an_error_not_data() {
    let res = run(Fault::Truncate(AT + 7), 30.0);
    assert!(res[0].contains("rank 1"), "{}", res[0]);
    assert!(
        res[1].contains("rank 0") || res[1].contains("rank 1"),
        "{}",
        res[1]
    );
}

#[test]
fn a_stalled_connection_times_out_naming_the_peer() {
    let res = run(Fault::Stall(AT), 1.5);
    for r in &res {
        let secs: f64 = r.split('s').next().unwrap().parse().unwrap();
        assert!(secs < 10.0, "{r}");
    }
    assert!(res[0].contains("rank 1"), "{}", res[0]);
    assert!(res[1].contains("rank 0"), "{}", res[1]);
}

#[test]
fn a_corrupted_byte_is_detected() {
    let res = run(Fault::Corrupt(AT + 1000), 30.0);
    assert!(res[0].contains("checksum"), "{}", res[0]);
    assert!(res[1].contains("rank 0"), "{}", res[1]);
}
