//! Connecting the ranks: every pair of ranks gets one authenticated connection (a full mesh:
//! the ring uses neighbours, small messages and point-to-point use any pair), and the shared
//! failure state that turns one lost peer into a prompt error on every rank.
//!
//! Set-up needs no coordinator: rank r binds its own address from the hostfile, dials every
//! lower rank (retrying until it is up), then accepts one connection from each higher rank.
//! Rank 0 only accepts, so by induction every dial is eventually answered.

use crate::auth;
use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::link::{Link, LinkError};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// All connections of this process, and whether the cluster has failed.
pub(crate) struct Mesh {
    pub rank: usize,
    links: Vec<Option<Arc<Link>>>,
    failed: Mutex<Option<Error>>,
    /// Set (after `failed`) once the cluster has failed: the check every collective makes,
    /// without taking `failed`'s lock.
    has_failed: AtomicBool,
    /// One collective at a time (groups from `split` share the mesh).
    busy: Mutex<()>,
    /// Small all-reduces by recursive doubling rather than the direct exchange: agreed by all
    /// ranks when the world group is made (see `RingComm::agree_small_all_reduce`).
    doubling: AtomicBool,
}

fn resolve(h: &str) -> Result<SocketAddr> {
    h.to_socket_addrs()
        .map_err(|e| Error::Config(format!("cannot resolve {h}: {e}")))?
        .next()
        .ok_or_else(|| Error::Config(format!("{h} resolves to no address")))
}

impl Mesh {
    /// Binds this rank's address, then connects to every other rank within `cfg.timeout`.
    pub fn connect(cfg: &ClusterConfig) -> Result<Mesh> {
        cfg.validate()?;
        let (me, world) = (cfg.rank, cfg.world_size);
        let mut links: Vec<Option<Arc<Link>>> = (0..world).map(|_| None).collect();
        if world == 1 {
            return Ok(Mesh::new(me, links));
        }
        let deadline = Instant::now() + cfg.timeout;
        let own = resolve(&cfg.hosts[me])?;
        let listener = TcpListener::bind(own).map_err(|e| {
            Error::Io(format!(
                "rank {me} cannot listen on {own}: {e} (is the port free and the address this host's?)"
            ))
        })?;
        let k = cfg.connections;
        let mut owned: Vec<Option<Link>> = (0..world).map(|_| None).collect();
        for (peer, slot) in owned.iter_mut().enumerate().take(me) {
            let fail = |e: std::io::Error| Error::Peer {
                rank: peer,
                addr: cfg.hosts[peer].clone(),
                msg: format!("socket set-up: {e}"),
            };
            let first = dial(cfg, peer, deadline, 0)?;
            let mut link = Link::new(
                first.stream,
                peer,
                cfg.hosts[peer].clone(),
                cfg.timeout,
                first.keys,
            )
            .map_err(fail)?;
            for index in 1..k {
                let extra = dial(cfg, peer, deadline, index)?;
                link.add_stripe(extra.stream, extra.keys).map_err(fail)?;
            }
            *slot = Some(link);
        }
        // Connections of higher ranks, by (rank, index); a rank's links are assembled once all
        // of its connections have arrived.
        let mut missing: Vec<(usize, usize)> = (me + 1..world)
            .flat_map(|r| (0..k).map(move |i| (r, i)))
            .collect();
        let mut arrived: Vec<Vec<Option<Dialed>>> =
            (0..world).map(|_| (0..k).map(|_| None).collect()).collect();
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Io(format!("listener: {e}")))?;
        while !missing.is_empty() {
            let (stream, from) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(Error::Peer {
                            rank: missing[0].0,
                            addr: cfg.hosts[missing[0].0].clone(),
                            msg: format!(
                                "did not connect within {:.0} s (not started, crashed, or blocked by a firewall)",
                                cfg.timeout.as_secs_f64()
                            ),
                        });
                    }
                    // Set-up only: a short pause between polls of a non-blocking accept.
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                Err(e) => return Err(Error::Io(format!("accept on {own}: {e}"))),
            };
            match handshake_in(cfg, stream, &missing, deadline) {
                Ok(d) => {
                    let (peer, index) = (d.peer, d.index);
                    missing.retain(|&m| m != (peer, index));
                    arrived[peer][index] = Some(d);
                    if arrived[peer].iter().all(Option::is_some) {
                        let mut conns = arrived[peer].iter_mut().filter_map(Option::take);
                        let fail = |e: std::io::Error| Error::Peer {
                            rank: peer,
                            addr: cfg.hosts[peer].clone(),
                            msg: format!("socket set-up: {e}"),
                        };
                        if let Some(first) = conns.next() {
                            let mut link = Link::new(
                                first.stream,
                                peer,
                                cfg.hosts[peer].clone(),
                                cfg.timeout,
                                first.keys,
                            )
                            .map_err(fail)?;
                            for c in conns {
                                link.add_stripe(c.stream, c.keys).map_err(fail)?;
                            }
                            owned[peer] = Some(link);
                        }
                    }
                }
                // A stranger (or a rank with the wrong secret) is logged and ignored; the real
                // rank may still connect.
                Err(msg) => eprintln!("tessera: rank {me} refused a connection from {from}: {msg}"),
            }
        }
        // Shared memory is for plaintext peers only: an encrypted cluster stays on TCP.
        if cfg.shm && !cfg.encrypt {
            share_memory(me, &mut owned).map_err(|(peer, e)| Error::Peer {
                rank: peer,
                addr: cfg.hosts[peer].clone(),
                msg: format!("setting up shared memory: {e}"),
            })?;
        }
        for (slot, link) in links.iter_mut().zip(owned) {
            *slot = link.map(Arc::new);
        }
        Ok(Mesh::new(me, links))
    }

    fn new(rank: usize, links: Vec<Option<Arc<Link>>>) -> Mesh {
        Mesh {
            rank,
            links,
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            busy: Mutex::new(()),
            doubling: AtomicBool::new(false),
        }
    }

    /// Whether small all-reduces use recursive doubling (the same on every rank).
    pub fn small_all_reduce_by_doubling(&self) -> bool {
        self.doubling.load(Ordering::Relaxed)
    }

    /// Records the group's agreed choice (before any collective of the caller's).
    pub fn set_small_all_reduce_by_doubling(&self, on: bool) {
        self.doubling.store(on, Ordering::Relaxed);
    }

    /// The link to global rank `r` (never this rank).
    pub fn link(&self, r: usize) -> Result<&Link> {
        self.links
            .get(r)
            .and_then(|l| l.as_deref())
            .ok_or_else(|| Error::Config(format!("no connection to rank {r}")))
    }

    /// Starts a collective: waits for the previous one and fails at once if the cluster has.
    pub fn begin(&self) -> Result<MutexGuard<'_, ()>> {
        let g = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !self.has_failed.load(Ordering::Acquire) {
            return Ok(g);
        }
        if let Some(e) = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(e);
        }
        Ok(g)
    }

    /// Records the first failure, tells every peer, and closes all connections so every blocked
    /// operation returns; returns the first failure (the root cause, not the echoes of it).
    pub fn fail(&self, e: Error) -> Error {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = f.clone() {
            return first;
        }
        *f = Some(e.clone());
        self.has_failed.store(true, Ordering::Release);
        drop(f);
        let msg = match &e {
            Error::Aborted(m) => m.clone(),
            other => format!("rank {} failed: {other}", self.rank),
        };
        for l in self.links.iter().flatten() {
            l.send_abort(&msg);
        }
        for l in self.links.iter().flatten() {
            l.shutdown();
        }
        e
    }

    /// A link result as a crate error, failing the mesh on error.
    pub fn check<T>(&self, link: &Link, r: std::result::Result<T, LinkError>) -> Result<T> {
        r.map_err(|e| {
            // A peer that aborted closed its end after telling us why: prefer its reason (the
            // root cause) over our own "connection lost".
            let e = match e {
                LinkError::Io(io) if is_disconnect(&io) => match link.pending_abort() {
                    Some(m) => LinkError::Aborted(m),
                    None => LinkError::Io(io),
                },
                e => e,
            };
            self.fail(link.error(e))
        })
    }
}

/// Gives every pair of ranks on the same host a shared-memory channel. Three rounds of small
/// messages over the (authenticated) TCP links, none waiting on another: everyone sends its
/// host id; the lower rank of each same-host pair creates the file and sends its name; the
/// higher maps it and answers; the lower unlinks it. A pair where anything fails stays on TCP.
fn share_memory(me: usize, links: &mut [Option<Link>]) -> std::result::Result<(), (usize, String)> {
    const SETUP: u32 = 0;
    const NAME: usize = 128;
    let err = |peer: usize| move |e: LinkError| (peer, format!("{e:?}"));
    let id = crate::shm::host_id();
    let mut idb = [0u8; 256];
    let n = id.len().min(idb.len());
    idb[..n].copy_from_slice(&id.as_bytes()[..n]);
    for (peer, l) in links.iter().enumerate() {
        if let Some(l) = l {
            l.send(SETUP, &idb).map_err(err(peer))?;
        }
    }
    let mut same = vec![false; links.len()];
    for (peer, l) in links.iter().enumerate() {
        if let Some(l) = l {
            let mut theirs = [0u8; 256];
            l.recv(SETUP, &mut theirs).map_err(err(peer))?;
            same[peer] = !id.is_empty() && theirs == idb;
        }
    }
    crate::shm::note_local_ranks(1 + same.iter().filter(|&&s| s).count());
    let token = crate::auth::nonce()
        .map(|n| {
            n[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
        .unwrap_or_default();
    let mut created: Vec<Option<(String, crate::shm::ShmPair)>> =
        links.iter().map(|_| None).collect();
    for peer in me + 1..links.len() {
        let Some(l) = &links[peer] else { continue };
        if !same[peer] {
            continue;
        }
        let path = format!("/dev/shm/tessera-{token}-{me}-{peer}");
        let mut name = [0u8; NAME];
        if let Ok(pair) = crate::shm::ShmPair::create(&path) {
            name[..path.len()].copy_from_slice(path.as_bytes());
            created[peer] = Some((path, pair));
        }
        l.send(SETUP, &name).map_err(err(peer))?;
    }
    let mut opened: Vec<Option<crate::shm::ShmPair>> = links.iter().map(|_| None).collect();
    for peer in 0..me {
        let Some(l) = &links[peer] else { continue };
        if !same[peer] {
            continue;
        }
        let mut name = [0u8; NAME];
        l.recv(SETUP, &mut name).map_err(err(peer))?;
        let end = name.iter().position(|&b| b == 0).unwrap_or(NAME);
        let path = String::from_utf8_lossy(&name[..end]).into_owned();
        let ok = !path.is_empty()
            && path.starts_with("/dev/shm/tessera-")
            && match crate::shm::ShmPair::open(&path) {
                Ok(p) => {
                    opened[peer] = Some(p);
                    true
                }
                Err(_) => false,
            };
        l.send(SETUP, &[ok as u8]).map_err(err(peer))?;
    }
    for peer in me + 1..links.len() {
        let Some(l) = &links[peer] else { continue };
        if !same[peer] {
            continue;
        }
        let mut ok = [0u8; 1];
        let r = l.recv(SETUP, &mut ok).map_err(err(peer));
        if let Some((path, pair)) = created[peer].take() {
            crate::shm::ShmPair::unlink(&path);
            if r.is_ok() && ok[0] == 1 {
                opened[peer] = Some(pair);
            }
        }
        r?;
    }
    for (l, p) in links.iter_mut().zip(opened) {
        if let (Some(l), Some(p)) = (l, p) {
            l.shm = Some(p);
        }
    }
    probe_cross_memory(links)
}

/// Checks, for every shared-memory pair, that each side can read the other's memory directly
/// (see `cma.rs`): each offers its process id and a probe address (zeros when `TESSERA_CMA=0`),
/// reads the peer's probe, and reports; a pair uses direct reads only if both sides could.
/// Every pair exchanges the same messages either way, so ranks never disagree on the protocol.
fn probe_cross_memory(links: &mut [Option<Link>]) -> std::result::Result<(), (usize, String)> {
    fn paired(l: &Option<Link>) -> Option<&Link> {
        l.as_ref().filter(|l| l.shm.is_some())
    }
    const SETUP: u32 = 0;
    let err = |peer: usize| move |e: LinkError| (peer, format!("{e:?}"));
    let offer = if crate::cma::enabled() {
        crate::cma::probe_offer()
    } else {
        [0u8; 16]
    };
    for (peer, l) in links.iter().enumerate() {
        if let Some(l) = paired(l) {
            l.send(SETUP, &offer).map_err(err(peer))?;
        }
    }
    let mut pids: Vec<Option<i32>> = vec![None; links.len()];
    for (peer, l) in links.iter().enumerate() {
        if let Some(l) = paired(l) {
            let mut theirs = [0u8; 16];
            l.recv(SETUP, &mut theirs).map_err(err(peer))?;
            let usable = offer != [0u8; 16] && theirs[..8] != [0u8; 8];
            pids[peer] = usable.then(|| crate::cma::probe_value(&theirs)).flatten();
        }
    }
    for (peer, l) in links.iter().enumerate() {
        if let Some(l) = paired(l) {
            l.send(SETUP, &[pids[peer].is_some() as u8])
                .map_err(err(peer))?;
        }
    }
    for (peer, l) in links.iter_mut().enumerate() {
        if let Some(l) = l.as_mut().filter(|l| l.shm.is_some()) {
            let mut ok = [0u8; 1];
            l.recv(SETUP, &mut ok).map_err(err(peer))?;
            l.cma_pid = pids[peer].filter(|_| ok[0] == 1);
        }
    }
    Ok(())
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

/// One authenticated connection, before it joins a link.
struct Dialed {
    peer: usize,
    index: usize,
    stream: TcpStream,
    keys: Option<([u8; 32], [u8; 32])>,
}

/// Opens connection `index` to the lower rank `peer`, retrying until it listens.
fn dial(cfg: &ClusterConfig, peer: usize, deadline: Instant, index: usize) -> Result<Dialed> {
    let addr_s = &cfg.hosts[peer];
    let addr = resolve(addr_s)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Peer {
                rank: peer,
                addr: addr_s.clone(),
                msg: format!(
                    "could not connect within {:.0} s (not started, crashed, or blocked by a firewall)",
                    cfg.timeout.as_secs_f64()
                ),
            });
        }
        match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(5))) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(left));
                let _ = s.set_write_timeout(Some(left));
                return match auth::connect(
                    &mut s,
                    &cfg.secret,
                    cfg.rank,
                    peer,
                    cfg.world_size,
                    cfg.encrypt,
                    index,
                ) {
                    Ok(session) => Ok(Dialed {
                        peer,
                        index,
                        stream: s,
                        keys: session.keys,
                    }),
                    Err(e) => Err(Error::Protocol {
                        rank: peer,
                        addr: addr_s.clone(),
                        msg: format!("handshake: {e}"),
                    }),
                };
            }
            // Not up yet: try again shortly (set-up only).
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn handshake_in(
    cfg: &ClusterConfig,
    mut s: TcpStream,
    missing: &[(usize, usize)],
    deadline: Instant,
) -> std::result::Result<Dialed, String> {
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    // A silent stranger may hold the accept loop only briefly.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    let session = auth::accept(
        &mut s,
        &cfg.secret,
        cfg.rank,
        cfg.world_size,
        cfg.encrypt,
        |r, i| missing.contains(&(r, i)),
    )
    .map_err(|e| e.to_string())?;
    Ok(Dialed {
        peer: session.peer,
        index: session.index,
        stream: s,
        keys: session.keys,
    })
}
