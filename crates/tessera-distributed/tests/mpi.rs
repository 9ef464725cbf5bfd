//! The MPI backend (`--features mpi`) under the real launcher: each test runs
//! `mpirun -n N <this test binary> --exact mpi_worker`, with `TESSERA_MPI_TEST_SCENARIO` naming
//! what every rank does, and checks every rank's `RESULT` lines. Every collective and every
//! dtype against a local reference, on 2, 3 and 4 ranks; calls split into many small MPI calls;
//! sub-groups; bit-identical float sums; errors. Without `mpirun` on the PATH (or in
//! `TESSERA_MPIRUN`) the tests fail, saying what to install.

#![cfg(feature = "mpi")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tessera_core::{Array, Dtype, ops};
use tessera_distributed::{Backend, Group, init};

mod common;
use common::Lcg;
use common::reference::check_all;

const SCENARIO: &str = "TESSERA_MPI_TEST_SCENARIO";

/// Where the parent wants the ranks' results: a file each rank appends whole lines to. Not
/// stdout: mpirun merges the ranks' output streams at arbitrary points, so another rank's
/// "ok" can land in the middle of a line.
const RESULTS: &str = "TESSERA_MPI_TEST_RESULTS";

fn report(text: impl std::fmt::Display) {
    use std::io::Write;
    let path = std::env::var(RESULTS).expect("the parent names the results file");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // One write per line: O_APPEND places each whole at the end of the file.
    f.write_all(format!("RESULT {text}\n").as_bytes())
        .unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// The parent side: mpirun.

fn mpirun_path() -> PathBuf {
    if let Ok(p) = std::env::var("TESSERA_MPIRUN") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("mpirun"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "mpirun was not found on the PATH: the MPI backend's tests need an MPI launcher \
             (Debian: apt-get install -y openmpi-bin libopenmpi-dev), or TESSERA_MPIRUN=/path/to/mpirun"
        )
    })
}

/// One mpirun at a time: ranks of concurrent jobs would fight over the cores.
static MPIRUN: Mutex<()> = Mutex::new(());

/// Runs `scenario` on `n` ranks under mpirun and returns each rank's `RESULT` lines (the
/// worker prefixes each with its rank). Panics, with the output, if mpirun fails or takes more
/// than a minute.
fn mpirun(n: usize, scenario: &str, env: &[(&str, &str)]) -> Vec<Vec<String>> {
    let _one = MPIRUN.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    let results = std::env::temp_dir().join(format!(
        "tessera-mpi-results-{}-{scenario}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&results);
    let mut c = Command::new(mpirun_path());
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .args(["--mca", "mpi_yield_when_idle", "1"])
    .args(["-n", &n.to_string()])
    .args(["-x", SCENARIO]);
    for (k, _) in env {
        c.args(["-x", k]);
    }
    c.arg(&exe)
        .args(["--exact", "mpi_worker", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env(RESULTS, &results)
        .envs(env.iter().map(|&(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("starting mpirun: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            // mpirun ends its ranks on SIGTERM; SIGKILL if it does not go.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let what = format!("{scenario} on {n} ranks");
    let Some(status) = status else {
        panic!("{what} did not finish within 60 s\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    assert!(
        status.success(),
        "{what} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let reported = std::fs::read_to_string(&results).unwrap_or_default();
    let _ = std::fs::remove_file(&results);
    let mut res: Vec<Vec<String>> = vec![Vec::new(); n];
    for line in reported.lines() {
        if let Some(rest) = line.strip_prefix("RESULT ") {
            let (r, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let r: usize = r.parse().unwrap();
            res[r].push(text.to_string());
        }
    }
    for (r, lines) in res.iter().enumerate() {
        assert!(
            lines.last().is_some_and(|l| l == "done"),
            "rank {r} of {what} did not finish: {lines:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    res
}

// ---------------------------------------------------------------------------------------------
// The rank side.

fn split(g: &Group) {
    let (n, r) = (g.size(), g.rank());
    // Even and odd ranks; keys reverse the order inside each group (and do not fit a C int).
    let sub = g
        .split((r % 2) as u32 + 1_000_000, -(r as i64) * (1 << 40))
        .unwrap();
    let members: Vec<usize> = (0..n).filter(|k| k % 2 == r % 2).rev().collect();
    assert_eq!(sub.size(), members.len());
    assert_eq!(sub.rank(), members.iter().position(|&k| k == r).unwrap());
    assert_eq!(sub.handle().0.backend(), "mpi");
    let x = Array::from_slice(&[r as i32], &[1]).unwrap();
    let s = sub.all_sum(&x).unwrap().item::<i32>().unwrap();
    assert_eq!(s, members.iter().sum::<usize>() as i32);
    let gathered = sub.all_gather(&x).unwrap().to_vec::<i32>().unwrap();
    assert_eq!(
        gathered,
        members.iter().map(|&k| k as i32).collect::<Vec<_>>()
    );
    check_all(&sub, 7, 5);
    // The parent still works after its children ran; a second split; a split of a split.
    let t = g.all_sum(&x).unwrap().item::<i32>().unwrap();
    assert_eq!(t, (n * (n - 1) / 2) as i32);
    let all = g.split(0, r as i64).unwrap();
    assert_eq!((all.rank(), all.size()), (r, n));
    assert_eq!(all.all_sum(&x).unwrap().item::<i32>().unwrap(), t);
    let single = sub.split(sub.rank() as u32, 0).unwrap();
    assert_eq!((single.rank(), single.size()), (0, 1));
    assert_eq!(single.all_sum(&x).unwrap().item::<i32>().unwrap(), r as i32);
    drop(sub);
    // A second world group (init again): its own communicator, the same ranks.
    let again = init(Backend::Mpi).unwrap();
    assert_eq!((again.rank(), again.size()), (r, n));
    assert_eq!(again.all_sum(&x).unwrap().item::<i32>().unwrap(), t);
}

fn errors(g: &Group) {
    let (n, r) = (g.size(), g.rank());
    let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    // Ranks that are not peers are refused when the op is made.
    assert!(g.send(&x, r).is_err());
    assert!(g.recv(&[2], Dtype::F32, n).is_err());
    // A message longer than the receive, then one shorter: MPI's errors come back as errors.
    if r == 0 {
        g.send(&x, 1).unwrap().eval().unwrap();
        let one = Array::from_slice(&[3.0f32], &[1]).unwrap();
        g.send(&one, 1).unwrap().eval().unwrap();
    } else if r == 1 {
        let e = g.recv(&[1], Dtype::F32, 0).unwrap().eval().unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, tessera_core::Error::Distributed { op: "recv", .. }),
            "{e:?}"
        );
        assert!(msg.contains("MPI_Recv") && msg.contains("rank 1"), "{msg}");
        report(format!("{r} {msg}"));
        let e = g.recv(&[2], Dtype::F32, 0).unwrap().eval().unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("expected 8 bytes") && msg.contains("got"),
            "{msg}"
        );
        report(format!("{r} {msg}"));
    }
    // The group still works afterwards.
    let s = g.all_sum(&x).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(s, vec![n as f32, 2.0 * n as f32]);
}

/// The entry point of every rank (a no-op when run as an ordinary test).
#[test]
fn mpi_worker() {
    let Ok(name) = std::env::var(SCENARIO) else {
        return;
    };
    let g = init(Backend::Mpi).expect("init");
    let (n, r) = (g.size(), g.rank());
    assert_eq!(g.handle().0.backend(), "mpi");
    let want: usize = std::env::var("OMPI_COMM_WORLD_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(n);
    assert_eq!(n, want);
    match name.as_str() {
        "all_dtypes" => {
            // 20_000 elements of 8 bytes: past the eager limit of the shared-memory transport.
            for (case, len) in [1usize, 7, 1000, 20_000].into_iter().enumerate() {
                check_all(&g, case as u64, len);
            }
        }
        // Run with TESSERA_MPI_MAX_COUNT small: every buffer goes in several MPI calls.
        "chunked" => {
            for (case, len) in [1usize, 7, 23].into_iter().enumerate() {
                check_all(&g, 10 + case as u64, len);
            }
        }
        "split" => split(&g),
        "rank1_fails" => {
            // Rank 1 fails while the others wait for it inside a collective.
            let x = ops::ones(&[1000], Dtype::F32).unwrap();
            x.eval().unwrap();
            assert_ne!(r, 1, "rank 1 fails on purpose");
            g.all_sum(&x).unwrap().eval().unwrap();
        }
        "mismatched" => {
            // Rank 1 calls a different collective than the others: nobody can complete, and
            // every rank's wait ends at TESSERA_TIMEOUT with the job aborted.
            let x = ops::ones(&[1000], Dtype::F32).unwrap();
            x.eval().unwrap();
            if r == 1 {
                g.all_gather(&x).unwrap().eval().unwrap();
            } else {
                g.all_sum(&x).unwrap().eval().unwrap();
            }
        }
        "errors" => errors(&g),
        "float_bits" => {
            for len in [1000usize, 300_001] {
                let x = Lcg(7 + r as u64).floats(len);
                let y = g.all_sum(&Array::from_slice(&x, &[len]).unwrap()).unwrap();
                let v = y.to_vec::<f32>().unwrap();
                let h = v.iter().fold(0xcbf29ce484222325u64, |h, x| {
                    (h ^ x.to_bits() as u64).wrapping_mul(0x100000001b3)
                });
                let exact: Vec<f64> = (0..n).map(|k| Lcg(7 + k as u64).floats(len)).fold(
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
                report(format!("{r} hash {len} {h:x}"));
            }
        }
        other => panic!("unknown scenario {other}"),
    }
    g.barrier().unwrap();
    report(format!("{r} done"));
}

#[test]
fn every_collective_every_dtype_on_2_3_4_ranks() {
    for n in [2, 3, 4] {
        mpirun(n, "all_dtypes", &[]);
    }
}

#[test]
fn buffers_split_into_many_mpi_calls() {
    mpirun(3, "chunked", &[("TESSERA_MPI_MAX_COUNT", "5")]);
}

#[test]
fn split_makes_mpi_subgroups() {
    mpirun(4, "split", &[]);
    mpirun(3, "split", &[]);
}

#[test]
fn mpi_errors_are_errors() {
    let res = mpirun(2, "errors", &[]);
    assert_eq!(res[1].len(), 3, "{res:?}");
}

#[test]
fn float_sums_are_bit_identical_on_every_rank() {
    for n in [3, 4] {
        let res = mpirun(n, "float_bits", &[]);
        for r in 1..n {
            assert_eq!(res[r], res[0], "rank {r} of {n} differs from rank 0");
        }
    }
}

/// A rank that fails ends the job (it exits without MPI_Finalize, so mpirun stops the others)
/// rather than leaving the other ranks waiting for it.
#[test]
fn mismatched_collectives_end_the_job_at_the_timeout() {
    let t = Instant::now();
    let r = std::panic::catch_unwind(|| mpirun(3, "mismatched", &[("TESSERA_TIMEOUT", "2")]));
    let msg = r
        .err()
        .and_then(|e| e.downcast::<String>().ok())
        .map(|s| *s)
        .expect("the job should fail");
    assert!(msg.contains("did not complete within 2.0 s"), "{msg}");
    assert!(msg.contains("TESSERA_TIMEOUT"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(40), "{:?}", t.elapsed());
}

#[test]
fn a_failing_rank_ends_the_job() {
    let t = Instant::now();
    let r = std::panic::catch_unwind(|| mpirun(3, "rank1_fails", &[]));
    let msg = r
        .err()
        .and_then(|e| e.downcast::<String>().ok())
        .map(|s| *s)
        .expect("the job should fail");
    assert!(msg.contains("failed"), "{msg}");
    assert!(msg.contains("rank 1 fails on purpose"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(30));
}
