//! `tessera cluster check`: the latency and bandwidth of every link, measured pair by pair
//! (one pair at a time, so each number is that link alone) and printed as a table by rank 0.

use tessera_core::collective::{CollectiveReduce, Communicator, Transport};
use tessera_core::{Dtype, Result};

/// One measured link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStat {
    pub from: usize,
    pub to: usize,
    /// Half the median round trip of an 8-byte message, in microseconds.
    pub latency_us: f64,
    /// One-way throughput of `bytes`-long messages, in GB/s (median of the repetitions).
    pub bandwidth_gbs: f64,
    /// How the data travels (see [`Communicator::transport`]).
    pub transport: Transport,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures every pair of ranks of `comm`; every rank must call it. Returns all links on
/// every rank. `bytes` is the bandwidth message size.
pub fn check_links(comm: &dyn Communicator, bytes: usize) -> Result<Vec<LinkStat>> {
    let (n, me) = (comm.size(), comm.rank());
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    // [latency, bandwidth, transport] per pair, filled by the pair's first rank, summed over
    // ranks after; the transport as its discriminant (`Transport::ALL`).
    let mut table = vec![0.0f64; 3 * pairs.len()];
    let mut ping = [0u8; 8];
    let mut big = vec![0u8; bytes.max(1)];
    let mut ack = [0u8; 1];
    for (p, &(i, j)) in pairs.iter().enumerate() {
        if me == i {
            let mut rtts = Vec::new();
            for k in 0..60 {
                let t = std::time::Instant::now();
                comm.send(&ping, j)?;
                comm.recv(&mut ping, j)?;
                if k >= 10 {
                    rtts.push(t.elapsed().as_secs_f64());
                }
            }
            let mut rates = Vec::new();
            for k in 0..4 {
                let t = std::time::Instant::now();
                comm.send(&big, j)?;
                comm.recv(&mut ack, j)?;
                if k >= 1 {
                    rates.push(big.len() as f64 / t.elapsed().as_secs_f64() / 1e9);
                }
            }
            table[3 * p] = median(rtts) / 2.0 * 1e6;
            table[3 * p + 1] = median(rates);
            table[3 * p + 2] = comm.transport(j) as usize as f64;
        } else if me == j {
            for _ in 0..60 {
                comm.recv(&mut ping, i)?;
                comm.send(&ping, i)?;
            }
            for _ in 0..4 {
                comm.recv(&mut big, i)?;
                comm.send(&ack, i)?;
            }
        }
        // The next pair starts when this one is done (a one-byte all-reduce as barrier).
        let mut b = [1u8];
        comm.all_reduce(CollectiveReduce::Sum, Dtype::U8, &mut b)?;
    }
    let mut raw: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
    comm.all_reduce(CollectiveReduce::Sum, Dtype::F64, &mut raw)?;
    Ok(pairs
        .iter()
        .enumerate()
        .map(|(p, &(from, to))| {
            let at = |k: usize| {
                let b: [u8; 8] = raw[8 * k..8 * k + 8].try_into().unwrap_or_default();
                f64::from_le_bytes(b)
            };
            LinkStat {
                from,
                to,
                latency_us: at(3 * p),
                bandwidth_gbs: at(3 * p + 1),
                transport: Transport::ALL
                    .get(at(3 * p + 2) as usize)
                    .copied()
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// The table `tessera cluster check` prints.
pub fn format_table(stats: &[LinkStat], hosts: &[String]) -> String {
    let name = |r: usize| match hosts.get(r) {
        Some(h) => format!("{r} ({h})"),
        None => r.to_string(),
    };
    let mut s = format!(
        "{:<28} {:<28} {:>12} {:>14}  {}\n",
        "rank", "rank", "latency us", "bandwidth GB/s", "transport"
    );
    for l in stats {
        s.push_str(&format!(
            "{:<28} {:<28} {:>12.1} {:>14.3}  {}\n",
            name(l.from),
            name(l.to),
            l.latency_us,
            l.bandwidth_gbs,
            l.transport.name()
        ));
    }
    s
}
