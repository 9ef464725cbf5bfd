//! Ranks on separate network hosts: each rank in its own network namespace, all joined by veth
//! pairs to a bridge in a hub namespace the test creates (nothing touches the host's own
//! network), with token-bucket rate limits (`tc tbf`) on every rank's link.
//!
//! Needs root and iproute2 (CI runs as root). Without them the tests fail and say so; set
//! `TESSERA_SKIP_NETNS=1` to skip them explicitly (they then print that they were skipped).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Opts, collect, report, scenario, spawn_ranks};
use std::process::Command;
use std::time::{Duration, Instant};
use tessera_core::{Dtype, ops};
use tessera_distributed::{Backend, init};

#[test]
fn rank_worker() {
    let Some(name) = scenario() else { return };
    let g = init(Backend::Any).expect("init");
    match name.as_str() {
        "bandwidth" => {
            // 16 MiB all_sums: check the data and report the bus bandwidth.
            let len = 4 << 20;
            let mut best = 0.0f64;
            for i in 0..3 {
                let x = ops::full(&[len], (g.rank() + i) as f64, Dtype::F32).unwrap();
                x.eval().unwrap();
                ops::barrier(g.handle()).unwrap();
                let t = Instant::now();
                let y = g.all_sum(&x).unwrap();
                y.eval().unwrap();
                let dt = t.elapsed().as_secs_f64();
                let n = g.size();
                let want: f32 = (0..n).map(|r| (r + i) as f32).sum();
                let m = ops::min(&y, ops::Axes::All, false)
                    .unwrap()
                    .item::<f32>()
                    .unwrap();
                let mx = ops::max(&y, ops::Axes::All, false)
                    .unwrap()
                    .item::<f32>()
                    .unwrap();
                assert_eq!((m, mx), (want, want));
                let busbw = (len * 4) as f64 / dt * 2.0 * (n - 1) as f64 / n as f64;
                best = best.max(busbw);
            }
            report(format!("busbw {:.0}", best / 1e6));
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `n` rank namespaces on a bridge; removed (with their links) on drop.
struct Net {
    names: Vec<String>,
    addrs: Vec<String>,
}

impl Net {
    fn new(n: usize, rate: &str) -> Result<Net, String> {
        let id = std::process::id() % 100_000;
        let hub = format!("tsr{id}hub");
        let mut net = Net {
            names: vec![hub.clone()],
            addrs: Vec::new(),
        };
        sh(&["ip", "netns", "add", &hub])?;
        sh(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        for r in 0..n {
            let ns = format!("tsr{id}r{r}");
            sh(&["ip", "netns", "add", &ns])?;
            net.names.push(ns.clone());
            let (a, b) = (format!("eth{r}"), format!("hub{r}"));
            sh(&[
                "ip", "-n", &ns, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns",
                &hub,
            ])?;
            let ip = format!("10.77.0.{}", r + 1);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &a,
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", &a, "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", &hub, "link", "set", &b, "master", "br0"])?;
            sh(&["ip", "-n", &hub, "link", "set", &b, "up"])?;
            // Rate-limit what each rank sends (its uplink).
            sh(&[
                "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &a, "root", "tbf", "rate",
                rate, "burst", "256kb", "latency", "100ms",
            ])?;
            net.addrs.push(format!("{ip}:7700"));
        }
        Ok(net)
    }

    fn rank_ns(&self, r: usize) -> &str {
        &self.names[r + 1]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

fn available() -> bool {
    if std::env::var("TESSERA_SKIP_NETNS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: multi-host tests (TESSERA_SKIP_NETNS=1)");
        return false;
    }
    // SAFETY: reading our own effective user id.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the multi-host tests need root to create network namespaces (CI runs as root); set TESSERA_SKIP_NETNS=1 to skip them"
    );
    true
}

fn run_on_hosts(n: usize, rate: &str) -> Vec<f64> {
    let net = Net::new(n, rate).unwrap_or_else(|e| panic!("could not build the test network: {e}"));
    let opts = Opts {
        hosts: Some(vec![net.addrs.clone(); n]),
        prefix: Some(
            (0..n)
                .map(|r| {
                    vec![
                        "ip".into(),
                        "netns".into(),
                        "exec".into(),
                        net.rank_ns(r).into(),
                    ]
                })
                .collect(),
        ),
        ..Opts::default()
    };
    let outs = collect(spawn_ranks(n, "bandwidth", &opts), Duration::from_secs(120));
    outs.iter()
        .map(|o| {
            assert_eq!(o.code, Some(0), "{}", o.stderr);
            let line = o.results.last().cloned().unwrap_or_default();
            line.strip_prefix("busbw ").unwrap().parse::<f64>().unwrap()
        })
        .collect()
}

#[test]
fn all_sum_across_separate_hosts_on_rate_limited_links() {
    if !available() {
        return;
    }
    // Three hosts, each sending at most 400 Mbit/s (50 MB/s): the data must be right, and the
    // ring must actually use the links (bus bandwidth well above a naive gather-and-broadcast,
    // below the limit).
    let bw = run_on_hosts(3, "400mbit");
    eprintln!("bus bandwidth per rank over 50 MB/s links: {bw:?} MB/s");
    for b in bw {
        assert!(
            b <= 52.0,
            "bus bandwidth {b} MB/s is above the 50 MB/s links: the limit did not apply"
        );
        assert!(
            b >= 25.0,
            "bus bandwidth {b} MB/s: under half the link rate"
        );
    }
}
