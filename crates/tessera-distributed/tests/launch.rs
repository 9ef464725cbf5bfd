//! The launcher: starts ranks that find each other through the environment alone, collects
//! their output by rank, and stops everyone as soon as one rank fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use tessera_core::{Array, Dtype, ops};
use tessera_distributed::launch::{LaunchSpec, launch};
use tessera_distributed::{Backend, init};

/// The program the launcher starts (this test binary, running only this function).
#[test]
fn launch_worker() {
    let Ok(mode) = std::env::var("LAUNCH_TEST_MODE") else {
        return;
    };
    // Only what the launcher put in the environment: no other configuration.
    let g = init(Backend::Any).expect("init from the launcher's environment");
    let x = Array::from_slice(&[g.rank() as i64 + 1], &[1]).unwrap();
    match mode.as_str() {
        "hello" => {
            let total = g.all_sum(&x).unwrap().item::<i64>().unwrap();
            println!(
                "\nhello from rank {} of {}: total {total}",
                g.rank(),
                g.size()
            );
            eprintln!("a line on stderr from rank {}", g.rank());
        }
        "one_fails" => {
            if g.rank() == 1 {
                eprintln!("rank 1 giving up");
                std::process::exit(3);
            }
            // The others wait in a collective that can never finish (timeout 120 s): only the
            // launcher stopping them ends this quickly.
            let _ = g
                .all_sum(&ops::ones(&[10], Dtype::F32).unwrap())
                .unwrap()
                .eval();
            // If the collective fails first (rank 1's connections closed), exit non-zero too.
            std::process::exit(1);
        }
        other => panic!("unknown mode {other}"),
    }
}

fn spec(n: usize, mode: &str) -> LaunchSpec {
    let exe = std::env::current_exe().unwrap().display().to_string();
    LaunchSpec {
        n,
        backend: "ring".into(),
        program: vec![
            exe,
            "--exact".into(),
            "launch_worker".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ],
        env: vec![("LAUNCH_TEST_MODE".into(), mode.into())],
        capture: true,
        ..LaunchSpec::default()
    }
}

#[test]
fn ranks_started_by_the_launcher_find_each_other() {
    let out = launch(&spec(3, "hello")).unwrap();
    assert_eq!(out.code, 0, "{:?}", out.output);
    assert_eq!(out.failed_rank, None);
    for r in 0..3 {
        let line = format!("hello from rank {r} of 3: total 6");
        assert!(
            out.output.iter().any(|(k, l)| *k == r && l == &line),
            "{:?}",
            out.output
        );
        let err = format!("a line on stderr from rank {r}");
        assert!(out.output.iter().any(|(k, l)| *k == r && l == &err));
    }
}

#[test]
fn one_failing_rank_stops_all_with_its_exit_code() {
    let start = Instant::now();
    let out = launch(&spec(3, "one_fails")).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.failed_rank, Some(1), "{:?}", out);
    assert_eq!(out.code, 3);
    assert!(out.codes.iter().all(Option::is_some));
    assert!(
        out.output
            .iter()
            .any(|(r, l)| *r == 1 && l.contains("rank 1 exited with status 3")),
        "{:?}",
        out.output
    );
}

#[test]
fn launch_rejects_bad_requests_clearly() {
    let mut s = spec(2, "hello");
    s.program.clear();
    assert!(launch(&s).unwrap_err().to_string().contains("no program"));
    let mut s = spec(0, "hello");
    s.n = 0;
    assert!(launch(&s).unwrap_err().to_string().contains("at least 1"));
    let mut s = spec(1, "hello");
    s.program = vec!["/nonexistent/program".into()];
    assert!(
        launch(&s)
            .unwrap_err()
            .to_string()
            .contains("cannot start rank 0")
    );
}
