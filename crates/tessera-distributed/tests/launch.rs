//! The launcher: starts ranks that find each other through the environment alone, collects
//! their output by rank, and stops everyone as soon as one rank fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use tessera_core::{Array, Dtype, ops};
use tessera_distributed::launch::{Bind, LaunchSpec, launch};
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
        "cpus" => {
            let cpus = tessera_distributed::bind::allowed_cpus();
            println!("\ncpus {cpus:?}");
        }
        "wait_signal" => {
            // Ready, then block until a signal ends the process (default SIGINT action).
            println!("\nready");
            let _ = g.barrier();
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

/// A launcher in its own process (so it may own the signal handlers and PATH).
#[test]
fn launcher_process() {
    let Ok(mode) = std::env::var("LAUNCHER_TEST_MODE") else {
        return;
    };
    let n: usize = std::env::var("LAUNCHER_TEST_N").unwrap().parse().unwrap();
    let mut s = spec(n, &mode);
    s.capture = false;
    if let Ok(h) = std::env::var("LAUNCHER_TEST_HOSTS") {
        s.hosts = h.split(',').map(str::to_string).collect();
        s.base_port = Some(
            std::env::var("LAUNCHER_TEST_PORT")
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    let out = launch(&s).unwrap();
    std::process::exit(out.code);
}

fn launcher(mode: &str, n: usize, extra: &[(&str, String)]) -> std::process::Command {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "launcher_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("LAUNCHER_TEST_MODE", mode)
    .env("LAUNCHER_TEST_N", n.to_string())
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    for (k, v) in extra {
        c.env(k, v);
    }
    c
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

/// Each rank's CPUs, from the "cpus" mode's output.
fn cpus_by_rank(out: &tessera_distributed::launch::LaunchOutcome, n: usize) -> Vec<Vec<usize>> {
    (0..n)
        .map(|r| {
            let line = out
                .output
                .iter()
                .find_map(|(k, l)| (*k == r).then(|| l.strip_prefix("cpus ")).flatten())
                .unwrap_or_else(|| panic!("no cpus line from rank {r}: {:?}", out.output));
            line.trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|c| c.parse().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn local_ranks_get_disjoint_cores_unless_told_not_to() {
    let mine = tessera_distributed::bind::allowed_cpus();
    let n = 2;
    if mine.len() < n {
        eprintln!("one core here: there is nothing to split; checking only that ranks run");
    }
    let out = launch(&spec(n, "cpus")).unwrap();
    assert_eq!(out.code, 0, "{:?}", out.output);
    let sets = cpus_by_rank(&out, n);
    if mine.len() >= n {
        assert_eq!(sets.concat().len(), mine.len(), "{sets:?} from {mine:?}");
        let mut all = sets.concat();
        all.sort_unstable();
        assert_eq!(
            all, mine,
            "the ranks' sets cover this process's CPUs once each"
        );
        assert!(sets.iter().all(|s| !s.is_empty()));
    }
    // Unbound, every rank may run anywhere this process may.
    let mut s = spec(n, "cpus");
    s.bind = Bind::None;
    let out = launch(&s).unwrap();
    assert_eq!(out.code, 0, "{:?}", out.output);
    assert!(cpus_by_rank(&out, n).iter().all(|s| *s == mine));
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

#[test]
fn signals_reach_every_rank_and_output_is_prefixed() {
    use std::io::BufRead;
    let mut child = launcher("wait_signal", 2, &[]).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ready = [false, false];
    let mut line = String::new();
    while !(ready[0] && ready[1]) {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "launcher ended early"
        );
        for (r, seen) in ready.iter_mut().enumerate() {
            if line.trim() == format!("[{r}] ready") {
                *seen = true;
            }
        }
    }
    let t = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    // The ranks died of the forwarded SIGINT: 128 + 2.
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[test]
fn remote_hosts_are_started_over_ssh() {
    // A stand-in `ssh` first on PATH runs the remote command here, so the remote path (the
    // command line, the secret on standard input) is exercised without an ssh server.
    let dir = std::env::temp_dir().join(format!("tessera-fake-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ssh = dir.join("ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\nwhile [ \"$1\" = -o ]; do shift 2; done\n[ \"$1\" = -T ] && shift\necho \"$1\" >> \"$(dirname \"$0\")/hosts.log\"\nshift\nexec sh -c \"$*\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = tessera_distributed::launch::free_ports(1).unwrap()[0];
    let out = launcher(
        "hello",
        2,
        &[
            ("PATH", path),
            // Loopback addresses other than 127.0.0.1 count as remote hosts.
            ("LAUNCHER_TEST_HOSTS", "127.0.0.2,127.0.0.3".into()),
            ("LAUNCHER_TEST_PORT", port.to_string()),
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.join("hosts.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[0] hello from rank 0 of 2: total 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[1] hello from rank 1 of 2: total 3"),
        "{stdout}"
    );
    let mut hosts: Vec<&str> = log.lines().collect();
    hosts.sort();
    assert_eq!(hosts, vec!["127.0.0.2", "127.0.0.3"]);
}
