//! Where a rank learns who it is and who its peers are: the environment the launcher sets, or a
//! hostfile.
//!
//! Environment (set by `tessera launch`; a program started that way needs nothing else):
//! - `TESSERA_RANK`, `TESSERA_WORLD_SIZE`: this process's rank and the number of ranks.
//! - `TESSERA_HOSTS`: comma-separated `host:port`, one per rank in rank order; rank r listens on
//!   entry r (and binds only that address).
//! - `TESSERA_HOSTFILE`: instead of `TESSERA_HOSTS`, a JSON file
//!   `{"hosts": ["10.0.0.1:7100", ...], "secret": "...", "encrypt": false}`.
//! - `TESSERA_SECRET`: the cluster secret (overrides the hostfile's); every connection proves
//!   knowledge of it.
//! - `TESSERA_TIMEOUT`: seconds a collective waits for a peer before failing (default 120).
//! - `TESSERA_ENCRYPT`: `1` to encrypt all traffic (ChaCha20-Poly1305).
//! - `TESSERA_BACKEND`: `ring` (default).
//! - `TESSERA_SHM`: `0` to keep ranks on the same host on TCP instead of shared memory.
//! - `TESSERA_CONNECTIONS`: TCP connections per pair of ranks (default 2, at most 16); messages
//!   of 1 MiB and more are split across them.

use crate::error::{Error, Result};
use std::time::Duration;

/// `TESSERA_TIMEOUT` (seconds, default 120): how long a collective waits for a peer.
pub(crate) fn timeout_from_env() -> Result<Duration> {
    match var("TESSERA_TIMEOUT") {
        Some(t) => {
            let s: f64 = t
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0 && s.is_finite())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "TESSERA_TIMEOUT={t:?} must be a positive number of seconds"
                    ))
                })?;
            Ok(Duration::from_secs_f64(s))
        }
        None => Ok(DEFAULT_TIMEOUT),
    }
}

/// Everything needed to join a cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    pub rank: usize,
    pub world_size: usize,
    /// `host:port` of every rank, in rank order.
    pub hosts: Vec<String>,
    /// The shared secret; never printed.
    pub secret: Vec<u8>,
    /// How long a collective (or the initial connection) waits on a peer.
    pub timeout: Duration,
    /// Encrypt and authenticate every frame, not only the handshake.
    pub encrypt: bool,
    /// Ranks on the same host exchange data through shared memory (unless encrypting).
    pub shm: bool,
    /// TCP connections per pair of ranks.
    pub connections: usize,
}

/// Default TCP connections per pair of ranks.
pub const DEFAULT_CONNECTIONS: usize = 2;

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("hosts", &self.hosts)
            .field("secret", &"<hidden>")
            .field("timeout", &self.timeout)
            .field("encrypt", &self.encrypt)
            .field("shm", &self.shm)
            .field("connections", &self.connections)
            .finish()
    }
}

/// The default time a collective waits for a peer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_usize(name: &str, v: &str) -> Result<usize> {
    v.trim()
        .parse()
        .map_err(|_| Error::Config(format!("{name}={v:?} is not a non-negative integer")))
}

/// A hostfile: the hosts in rank order, and optionally the secret and encryption switch.
#[derive(Debug, Clone, PartialEq)]
pub struct Hostfile {
    pub hosts: Vec<String>,
    pub secret: Option<String>,
    pub encrypt: bool,
}

impl Hostfile {
    /// Parses `{"hosts": [...], "secret": "...", "encrypt": bool}` (only `hosts` required).
    pub fn parse(text: &str, origin: &str) -> Result<Hostfile> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("{origin}: not valid JSON: {e}")))?;
        let hosts = v
            .get("hosts")
            .and_then(|h| h.as_array())
            .ok_or_else(|| {
                Error::Config(format!("{origin}: needs \"hosts\": [\"host:port\", ...]"))
            })?
            .iter()
            .map(|h| {
                h.as_str().map(str::to_string).ok_or_else(|| {
                    Error::Config(format!(
                        "{origin}: every entry of \"hosts\" must be a string"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let secret = match v.get("secret") {
            None | Some(serde_json::Value::Null) => None,
            Some(s) => Some(
                s.as_str()
                    .ok_or_else(|| Error::Config(format!("{origin}: \"secret\" must be a string")))?
                    .to_string(),
            ),
        };
        let encrypt = v.get("encrypt").and_then(|e| e.as_bool()).unwrap_or(false);
        Ok(Hostfile {
            hosts,
            secret,
            encrypt,
        })
    }

    pub fn load(path: &str) -> Result<Hostfile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read hostfile {path}: {e}")))?;
        Hostfile::parse(&text, path)
    }
}

/// Checks that `host:port` has both parts and a numeric port.
pub fn check_host(h: &str) -> Result<()> {
    let (host, port) = h
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("host {h:?} must be host:port")))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(Error::Config(format!(
            "host {h:?} must be host:port with a port in 0..65536"
        )));
    }
    Ok(())
}

impl ClusterConfig {
    /// Reads the configuration from the environment (see the module docs). `Ok(None)` when
    /// `TESSERA_WORLD_SIZE` is not set: the process runs alone.
    pub fn from_env() -> Result<Option<ClusterConfig>> {
        let Some(world) = var("TESSERA_WORLD_SIZE") else {
            return Ok(None);
        };
        let world_size = parse_usize("TESSERA_WORLD_SIZE", &world)?;
        let rank = match var("TESSERA_RANK") {
            Some(r) => parse_usize("TESSERA_RANK", &r)?,
            None => {
                return Err(Error::Config(
                    "TESSERA_WORLD_SIZE is set but TESSERA_RANK is not".into(),
                ));
            }
        };
        let file = var("TESSERA_HOSTFILE")
            .map(|p| Hostfile::load(&p))
            .transpose()?;
        let hosts = match (var("TESSERA_HOSTS"), &file) {
            (Some(h), _) => h.split(',').map(|s| s.trim().to_string()).collect(),
            (None, Some(f)) => f.hosts.clone(),
            (None, None) if world_size == 1 => vec!["127.0.0.1:0".to_string()],
            (None, None) => {
                return Err(Error::Config(
                    "set TESSERA_HOSTS (host:port per rank) or TESSERA_HOSTFILE; `tessera launch` sets them".into(),
                ));
            }
        };
        let secret = var("TESSERA_SECRET")
            .or_else(|| file.as_ref().and_then(|f| f.secret.clone()))
            .map(String::into_bytes);
        let timeout = timeout_from_env()?;
        let encrypt = match var("TESSERA_ENCRYPT").as_deref() {
            Some("1" | "true" | "yes") => true,
            Some("0" | "false" | "no") | None => file.as_ref().is_some_and(|f| f.encrypt),
            Some(other) => {
                return Err(Error::Config(format!(
                    "TESSERA_ENCRYPT={other:?} must be 0 or 1"
                )));
            }
        };
        let shm = !matches!(var("TESSERA_SHM").as_deref(), Some("0" | "false" | "no"));
        let connections = match var("TESSERA_CONNECTIONS") {
            Some(c) => parse_usize("TESSERA_CONNECTIONS", &c)?,
            None => DEFAULT_CONNECTIONS,
        };
        let cfg = ClusterConfig {
            rank,
            world_size,
            hosts,
            secret: secret.unwrap_or_default(),
            timeout,
            encrypt,
            shm,
            connections,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    /// Checks ranks, hosts and the secret agree with each other.
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::Config("the world size must be at least 1".into()));
        }
        if self.rank >= self.world_size {
            return Err(Error::Config(format!(
                "rank {} is out of range for a world of {}",
                self.rank, self.world_size
            )));
        }
        if self.hosts.len() != self.world_size {
            return Err(Error::Config(format!(
                "{} hosts listed for a world of {} ranks (one host:port per rank)",
                self.hosts.len(),
                self.world_size
            )));
        }
        for h in &self.hosts {
            check_host(h)?;
        }
        if !(1..=16).contains(&self.connections) {
            return Err(Error::Config(format!(
                "{} connections per pair of ranks: use 1 to 16 (TESSERA_CONNECTIONS)",
                self.connections
            )));
        }
        if self.world_size > 1 && self.secret.len() < 8 {
            return Err(Error::Config(
                "a cluster secret of at least 8 bytes is required: set TESSERA_SECRET or \"secret\" in the hostfile".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostfile_parses_and_rejects_garbage() {
        let h =
            Hostfile::parse(r#"{"hosts": ["a:1", "b:2"], "secret": "s3cretpass"}"#, "x").unwrap();
        assert_eq!(h.hosts, vec!["a:1", "b:2"]);
        assert_eq!(h.secret.as_deref(), Some("s3cretpass"));
        assert!(!h.encrypt);
        for bad in [
            "",
            "[]",
            r#"{"hosts": [1]}"#,
            r#"{"hosts": ["a:1"], "secret": 5}"#,
        ] {
            assert!(
                matches!(Hostfile::parse(bad, "x"), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn validate_names_the_problem() {
        let mut c = ClusterConfig {
            rank: 0,
            world_size: 2,
            hosts: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            secret: b"long enough".to_vec(),
            timeout: DEFAULT_TIMEOUT,
            encrypt: false,
            shm: true,
            connections: DEFAULT_CONNECTIONS,
        };
        assert!(c.validate().is_ok());
        c.rank = 2;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        c.rank = 0;
        c.hosts.pop();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("1 hosts listed")
        );
        c.hosts.push("nohost".into());
        assert!(c.validate().unwrap_err().to_string().contains("host:port"));
        c.hosts[1] = "127.0.0.1:2".into();
        c.secret = b"short".to_vec();
        assert!(c.validate().unwrap_err().to_string().contains("secret"));
    }
}
