//! Multi-process test harness: a test starts `n` copies of its own test binary, each running
//! only the `rank_worker` test with `TESSERA_TEST_SCENARIO` naming what to do, and each given its
//! rank, the hosts and the secret through the environment exactly as `tessera launch` does.
//! Workers report with `RESULT ...` lines on stdout and fail by panicking (non-zero exit).

#![allow(dead_code)]

pub mod proxy;
pub mod reference;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tessera_distributed::launch::free_ports;

pub const SECRET: &str = "test cluster secret";

/// The scenario this process should run as a rank, if it is a worker.
pub fn scenario() -> Option<String> {
    std::env::var("TESSERA_TEST_SCENARIO").ok()
}

/// Prints one result line for the parent.
pub fn report(text: impl std::fmt::Display) {
    // A newline first: the test harness has already printed "test rank_worker ... " here.
    println!("\nRESULT {text}");
}

#[derive(Clone)]
pub struct Opts {
    pub timeout_s: f64,
    pub encrypt: bool,
    /// Secret per rank (default: the same for all).
    pub secrets: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    /// The hosts list each rank sees (default: loopback ports chosen here, the same for all).
    /// A rank must see its own real address; others may see a proxy in front of it.
    pub hosts: Option<Vec<Vec<String>>>,
    /// A command to run each rank under (e.g. `ip netns exec NS`).
    pub prefix: Option<Vec<Vec<String>>>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            timeout_s: 30.0,
            encrypt: false,
            secrets: None,
            env: Vec::new(),
            hosts: None,
            prefix: None,
        }
    }
}

/// Starts `n` ranks of `scenario`, stdout piped.
pub fn spawn_ranks(n: usize, scenario: &str, opts: &Opts) -> Vec<Child> {
    let ports = free_ports(n).unwrap();
    let default_hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let exe = std::env::current_exe().unwrap();
    (0..n)
        .map(|r| {
            let secret = opts
                .secrets
                .as_ref()
                .map(|s| s[r].clone())
                .unwrap_or_else(|| SECRET.to_string());
            let hosts = opts
                .hosts
                .as_ref()
                .map(|h| h[r].clone())
                .unwrap_or_else(|| default_hosts.clone());
            let mut c = match opts.prefix.as_ref().map(|p| &p[r]) {
                Some(p) if !p.is_empty() => {
                    let mut c = Command::new(&p[0]);
                    c.args(&p[1..]).arg(&exe);
                    c
                }
                _ => Command::new(&exe),
            };
            c.args(["--exact", "rank_worker", "--nocapture", "--test-threads=1"])
                .env("TESSERA_TEST_SCENARIO", scenario)
                .env("TESSERA_RANK", r.to_string())
                .env("TESSERA_WORLD_SIZE", n.to_string())
                .env("TESSERA_HOSTS", hosts.join(","))
                .env("TESSERA_SECRET", secret)
                .env("TESSERA_TIMEOUT", opts.timeout_s.to_string())
                .env("TESSERA_ENCRYPT", if opts.encrypt { "1" } else { "0" })
                .envs(opts.env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect()
}

/// One rank's outcome: exit code and its `RESULT` lines (prefix removed); stderr for messages.
#[derive(Debug)]
pub struct RankOutcome {
    pub code: Option<i32>,
    pub results: Vec<String>,
    pub stderr: String,
}

/// Waits for every child (at most `limit`, then kills them all and panics: a hang is a failure,
/// never a stuck test run).
pub fn collect(children: Vec<Child>, limit: Duration) -> Vec<RankOutcome> {
    let n = children.len();
    let (tx, rx) = mpsc::channel();
    let mut pids = Vec::new();
    for (r, mut c) in children.into_iter().enumerate() {
        pids.push(c.id());
        let tx = tx.clone();
        std::thread::spawn(move || {
            let out = c.stdout.take().unwrap();
            let mut err = c.stderr.take().unwrap();
            let errt = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut s);
                s
            });
            let results: Vec<String> = BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("RESULT ").map(str::to_string))
                .collect();
            let status = c.wait().unwrap();
            let stderr = errt.join().unwrap_or_default();
            let _ = tx.send((
                r,
                RankOutcome {
                    code: status.code(),
                    results,
                    stderr,
                },
            ));
        });
    }
    drop(tx);
    let mut outs: Vec<Option<RankOutcome>> = (0..n).map(|_| None).collect();
    let deadline = std::time::Instant::now() + limit;
    for _ in 0..n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((r, o)) => outs[r] = Some(o),
            Err(_) => {
                for p in &pids {
                    // SAFETY: killing our own children.
                    unsafe { libc::kill(*p as i32, libc::SIGKILL) };
                }
                panic!("ranks did not finish within {limit:?}: {outs:?}");
            }
        }
    }
    outs.into_iter().map(|o| o.unwrap()).collect()
}

/// Sends a signal to a child.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Runs `scenario` on `n` ranks and asserts every rank succeeded; returns their results.
pub fn run_ok(n: usize, scenario: &str, opts: &Opts) -> Vec<Vec<String>> {
    let outs = collect(spawn_ranks(n, scenario, opts), Duration::from_secs(120));
    for (r, o) in outs.iter().enumerate() {
        assert_eq!(
            o.code,
            Some(0),
            "rank {r} of {scenario} on {n} ranks failed:\n{}",
            o.stderr
        );
    }
    outs.into_iter().map(|o| o.results).collect()
}

/// Deterministic pseudo-random u64 stream.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Small integers 0..m as f64.
    pub fn small(&mut self, len: usize, m: u64) -> Vec<f64> {
        (0..len).map(|_| (self.next() % m) as f64).collect()
    }
    /// Uniform floats in [-1, 1).
    pub fn floats(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| (self.next() % (1 << 24)) as f32 / (1 << 23) as f32 - 1.0)
            .collect()
    }
}
