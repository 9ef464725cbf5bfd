//! The launcher behind `tessera launch`: starts one process per rank (locally, or over ssh for
//! remote hosts), hands each its rank, the hosts and the secret through the environment,
//! prefixes every output line with the rank, forwards SIGINT/SIGTERM, and stops every rank as
//! soon as one fails.
//!
//! Ranks run in their own process groups, so a Ctrl-C at the terminal reaches the launcher
//! once and is forwarded to each rank once. Remote ranks get the secret on ssh's standard input
//! (never on a command line another user could read with `ps`).

use crate::config::{Hostfile, check_host};
use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// What to start and where.
#[derive(Debug, Clone, Default)]
pub struct LaunchSpec {
    /// Number of ranks.
    pub n: usize,
    /// Host names or addresses; rank r runs on `hosts[r % hosts.len()]`. Empty: all local.
    pub hosts: Vec<String>,
    /// Port of rank 0 on each host; rank r listens on `base_port + r` (local runs without a
    /// base port pick free ports).
    pub base_port: Option<u16>,
    /// A hostfile instead of `hosts` (its `host:port` entries are used as they are).
    pub hostfile: Option<Hostfile>,
    /// `ring` or `mpi`.
    pub backend: String,
    /// Seconds a collective waits for a peer (`TESSERA_TIMEOUT`).
    pub timeout: Option<f64>,
    /// Encrypt traffic (`TESSERA_ENCRYPT=1`).
    pub encrypt: bool,
    /// The program and its arguments.
    pub program: Vec<String>,
    /// Extra environment for every rank.
    pub env: Vec<(String, String)>,
    /// Collect the ranks' output in [`LaunchOutcome::output`] instead of printing it.
    pub capture: bool,
    /// Whether the ranks started on this host get disjoint sets of its cores.
    pub bind: Bind,
}

/// Core binding for the ranks a launch starts on this host (see [`crate::bind`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Bind {
    /// Each local rank gets its own cores, split evenly, when there are at least as many
    /// cores as local ranks; otherwise nothing is bound.
    #[default]
    Cores,
    /// Leave placement to the operating system.
    None,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchOutcome {
    /// 0 when every rank succeeded; else the first failing rank's exit code (128 + signal).
    pub code: i32,
    /// The first rank that failed, if any.
    pub failed_rank: Option<usize>,
    /// Each rank's exit code.
    pub codes: Vec<Option<i32>>,
    /// With `capture`: every output line as (rank, line), stdout and stderr together.
    pub output: Vec<(usize, String)>,
}

type Sink = std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>;

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
        || std::env::var("HOSTNAME").is_ok_and(|h| h == host)
}

/// Free TCP ports on the loopback interface (bound together, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let ls = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Io(format!("cannot find free ports: {e}")))?;
    ls.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| Error::Io(e.to_string()))
        })
        .collect()
}

/// A fresh random secret (hex).
pub fn random_secret() -> Result<String> {
    let n = crate::auth::nonce().map_err(|e| Error::Io(e.to_string()))?;
    Ok(n.iter().map(|b| format!("{b:02x}")).collect())
}

/// The `host:port` of every rank and whether it runs here.
fn placements(spec: &LaunchSpec) -> Result<Vec<(String, bool)>> {
    if let Some(f) = &spec.hostfile {
        if f.hosts.len() != spec.n {
            return Err(Error::Config(format!(
                "the hostfile lists {} hosts for -n {} (one host:port per rank)",
                f.hosts.len(),
                spec.n
            )));
        }
        return f
            .hosts
            .iter()
            .map(|h| {
                check_host(h)?;
                let host = h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h);
                Ok((h.clone(), is_local(host)))
            })
            .collect();
    }
    if spec.hosts.is_empty() || spec.hosts.iter().all(|h| is_local(h)) {
        let ports: Vec<u16> = match spec.base_port {
            Some(p) => (0..spec.n).map(|r| p.saturating_add(r as u16)).collect(),
            None => free_ports(spec.n)?,
        };
        return Ok(ports
            .into_iter()
            .map(|p| (format!("127.0.0.1:{p}"), true))
            .collect());
    }
    let base = spec.base_port.unwrap_or(7100);
    Ok((0..spec.n)
        .map(|r| {
            let h = &spec.hosts[r % spec.hosts.len()];
            (format!("{h}:{}", base as usize + r), is_local(h))
        })
        .collect())
}

/// The core mask of each rank started on this host (`None` for remote ranks, or when nothing is
/// bound): local ranks split the cores this launcher may use.
fn local_masks(spec: &LaunchSpec, places: &[(String, bool)]) -> Vec<Option<crate::bind::Mask>> {
    let local = places.iter().filter(|(_, l)| *l).count();
    if spec.bind == Bind::None || local < 2 {
        return vec![None; places.len()];
    }
    let cpus = crate::bind::allowed_cpus();
    let Some(sets) = crate::bind::core_sets(&cpus, local) else {
        eprintln!(
            "note: {local} ranks on {} cores here: they share cores (not bound), and small messages wait on the scheduler",
            cpus.len()
        );
        return vec![None; places.len()];
    };
    let mut sets = sets.into_iter();
    places
        .iter()
        .map(|(_, l)| {
            l.then(|| sets.next())
                .flatten()
                .map(|s| crate::bind::Mask::of(&s))
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Starts all ranks and waits for them. Returns when every rank has exited (or has been
/// stopped because another failed).
pub fn launch(spec: &LaunchSpec) -> Result<LaunchOutcome> {
    if spec.n == 0 {
        return Err(Error::Config("-n must be at least 1".into()));
    }
    if spec.program.is_empty() {
        return Err(Error::Config(
            "no program given: tessera launch -n N -- PROGRAM ARGS...".into(),
        ));
    }
    if spec.backend == "mpi" {
        return launch_mpirun(spec);
    }
    let places = placements(spec)?;
    let hosts_var = places
        .iter()
        .map(|(h, _)| h.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let secret = match std::env::var("TESSERA_SECRET") {
        Ok(s) if !s.is_empty() => s,
        _ => match spec.hostfile.as_ref().and_then(|f| f.secret.clone()) {
            Some(s) => s,
            None => random_secret()?,
        },
    };
    let mut common: Vec<(String, String)> = vec![
        ("TESSERA_WORLD_SIZE".into(), spec.n.to_string()),
        ("TESSERA_HOSTS".into(), hosts_var),
        ("TESSERA_BACKEND".into(), spec.backend.clone()),
    ];
    if let Some(t) = spec.timeout {
        common.push(("TESSERA_TIMEOUT".into(), t.to_string()));
    }
    if spec.encrypt {
        common.push(("TESSERA_ENCRYPT".into(), "1".into()));
    }
    common.extend(spec.env.iter().cloned());

    // SAFETY: installing a handler that only stores into an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    SIGNAL.store(0, Ordering::SeqCst);

    let masks = local_masks(spec, &places);
    let sink: Option<Sink> = spec.capture.then(Default::default);
    let mut children: Vec<Child> = Vec::with_capacity(spec.n);
    let mut pumps = Vec::new();
    for (rank, (_, local)) in places.iter().enumerate() {
        let mut cmd = if *local {
            let mut c = Command::new(&spec.program[0]);
            c.args(&spec.program[1..]);
            for (k, v) in &common {
                c.env(k, v);
            }
            c.env("TESSERA_RANK", rank.to_string());
            c.env("TESSERA_SECRET", &secret);
            c.stdin(Stdio::null());
            if let Some(mask) = masks.get(rank).copied().flatten() {
                // SAFETY: the closure makes one system call (async-signal-safe) between fork
                // and exec; a refusal leaves the rank unbound, which is only slower.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
                        let _ = mask.apply();
                        Ok(())
                    });
                }
            }
            c
        } else {
            let host = places[rank]
                .0
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| ".".into());
            let mut line = format!(
                "cd {} && IFS= read -r TESSERA_SECRET && export TESSERA_SECRET && exec env",
                shell_quote(&cwd)
            );
            for (k, v) in common
                .iter()
                .chain(std::iter::once(&("TESSERA_RANK".into(), rank.to_string())))
            {
                line.push_str(&format!(" {}={}", k, shell_quote(v)));
            }
            for a in &spec.program {
                line.push(' ');
                line.push_str(&shell_quote(a));
            }
            let mut c = Command::new("ssh");
            c.args(["-o", "BatchMode=yes", "-T", &host, &line]);
            c.stdin(Stdio::piped());
            c
        };
        // Own process group: terminal signals reach only the launcher, which forwards them.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut children);
                return Err(Error::Io(format!(
                    "cannot start rank {rank} ({}): {e}",
                    spec.program[0]
                )));
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{secret}");
        }
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, rank, false, sink.clone()));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, rank, true, sink.clone()));
        }
        children.push(child);
    }

    // One waiting thread per rank: exits arrive in the order they happen, so the first rank to
    // fail is the one reported (the others usually fail because of it, a moment later).
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    for (r, mut c) in children.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let code = match c.wait() {
                Ok(status) => status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                }),
                Err(_) => 255,
            };
            let _ = tx.send((r, code));
        });
    }
    drop(tx);
    let mut codes: Vec<Option<i32>> = vec![None; spec.n];
    let mut failed: Option<usize> = None;
    let mut forwarded = false;
    let mut kill_at: Option<Instant> = None;
    let signal_running = |codes: &[Option<i32>], sig: libc::c_int| {
        for (r, pid) in pids.iter().enumerate() {
            if codes[r].is_none() {
                // SAFETY: signalling our own child (not yet reaped, so the pid is still its).
                unsafe { libc::kill(*pid as libc::pid_t, sig) };
            }
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((r, code)) => {
                codes[r] = Some(code);
                if code != 0 && failed.is_none() {
                    failed = Some(r);
                    let msg = format!(
                        "tessera launch: rank {r} exited with status {code}; stopping the other ranks"
                    );
                    match &sink {
                        Some(s) => s.lock().unwrap_or_else(|e| e.into_inner()).push((r, msg)),
                        None => eprintln!("{msg}"),
                    }
                    signal_running(&codes, libc::SIGTERM);
                    kill_at = Some(Instant::now() + Duration::from_secs(5));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 && !forwarded {
            signal_running(&codes, sig);
            forwarded = true;
        }
        // Ranks that ignore SIGTERM get SIGKILL 5 s later.
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            signal_running(&codes, libc::SIGKILL);
            kill_at = None;
        }
    }
    for p in pumps {
        let _ = p.join();
    }
    // SAFETY: restoring the default dispositions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
    let code = failed.and_then(|r| codes[r]).unwrap_or(0);
    let output = sink
        .map(|s| std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner())))
        .unwrap_or_default();
    Ok(LaunchOutcome {
        code,
        failed_rank: failed,
        codes,
        output,
    })
}

/// `--backend mpi`: the ranks are MPI processes, so `mpirun` starts them (with `--tag-output`
/// prefixing each line with its rank) and the program's `init` picks MPI from its environment.
fn launch_mpirun(spec: &LaunchSpec) -> Result<LaunchOutcome> {
    let mut c = Command::new(std::env::var("TESSERA_MPIRUN").unwrap_or_else(|_| "mpirun".into()));
    c.args(["-n", &spec.n.to_string(), "--oversubscribe", "--tag-output"]);
    // SAFETY: reading our own effective user id.
    if unsafe { libc::geteuid() } == 0 {
        c.arg("--allow-run-as-root");
    }
    if !spec.hosts.is_empty() {
        c.args(["--host", &spec.hosts.join(",")]);
    }
    c.args(["-x", "TESSERA_BACKEND=mpi"]);
    for (k, v) in &spec.env {
        c.args(["-x", &format!("{k}={v}")]);
    }
    c.args(&spec.program);
    let status = c.status().map_err(|e| {
        Error::Io(format!(
            "cannot start mpirun ({e}): install OpenMPI (Debian: openmpi-bin libopenmpi-dev) or use --backend ring"
        ))
    })?;
    let code = status.code().unwrap_or(128);
    Ok(LaunchOutcome {
        code,
        failed_rank: None,
        codes: Vec::new(),
        output: Vec::new(),
    })
}

/// SIGTERM to every running rank, then SIGKILL to those still running after 5 s.
fn stop_all(children: &mut [Child]) {
    for c in children.iter() {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for c in children.iter_mut() {
        let _ = c.kill();
    }
}

/// Copies a rank's output line by line with a `[rank]` prefix.
fn pump(
    src: impl Read + Send + 'static,
    rank: usize,
    stderr: bool,
    sink: Option<Sink>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(src);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches('\n');
                    if let Some(s) = &sink {
                        s.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((rank, text.to_string()));
                    } else if stderr {
                        eprintln!("[{rank}] {text}");
                    } else {
                        println!("[{rank}] {text}");
                    }
                }
            }
        }
    })
}
