//! `tessera launch`: start a program as the ranks of a cluster (see
//! `tessera_distributed::launch`).

use crate::args::Flags;
use tessera::distributed::config::Hostfile;
use tessera::distributed::launch::{Bind, LaunchSpec, launch};

pub const USAGE: &str =
    "usage: tessera launch -n N [--hosts a,b | --hostfile hosts.json] [--port P]
                      [--backend ring|mpi] [--timeout SECONDS] [--encrypt] [--bind core|none]
                      -- PROGRAM ARGS...";

/// Flags that take a value, shared with `tessera cluster check`.
pub const VALUE_FLAGS: [&str; 7] = [
    "-n",
    "--hosts",
    "--hostfile",
    "--port",
    "--backend",
    "--timeout",
    "--bind",
];

/// Runs the ranks; returns the exit code to leave with (the first failing rank's).
pub fn run(args: &[String]) -> Result<i32, String> {
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or_else(|| format!("put the program after `--`\n{USAGE}"))?;
    let (ours, program) = (&args[..split], &args[split + 1..]);
    let flags = Flags::parse(ours, &VALUE_FLAGS, &["--encrypt"])?;
    let outcome = launch(&spec(&flags, program.to_vec())?).map_err(|e| e.to_string())?;
    Ok(outcome.code)
}

/// The launch the flags describe, for `program`.
pub fn spec(flags: &Flags, program: Vec<String>) -> Result<LaunchSpec, String> {
    let hostfile = flags
        .get("--hostfile")
        .map(Hostfile::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    let n = match (flags.get("-n"), &hostfile) {
        (Some(_), _) => flags.num::<usize>("-n", 0)?,
        (None, Some(f)) => f.hosts.len(),
        (None, None) => return Err(format!("-n N is required\n{USAGE}")),
    };
    let backend = flags.get("--backend").unwrap_or("ring").to_string();
    if !matches!(backend.as_str(), "ring" | "mpi") {
        return Err(format!("--backend must be ring or mpi, not {backend:?}"));
    }
    let timeout = match flags.get("--timeout") {
        None => None,
        Some(_) => {
            let t = flags.num::<f64>("--timeout", 0.0)?;
            if t <= 0.0 {
                return Err("--timeout must be a positive number of seconds".into());
            }
            Some(t)
        }
    };
    let base_port = match flags.get("--port") {
        Some(_) => Some(flags.num::<u16>("--port", 0)?),
        None => None,
    };
    Ok(LaunchSpec {
        n,
        hosts: flags
            .get("--hosts")
            .map(|h| {
                h.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        base_port,
        hostfile,
        backend,
        timeout,
        encrypt: flags.on("--encrypt"),
        program,
        env: Vec::new(),
        capture: false,
        bind: match flags.get("--bind").unwrap_or("core") {
            "core" => Bind::Cores,
            "none" => Bind::None,
            other => return Err(format!("--bind must be core or none, not {other:?}")),
        },
    })
}
