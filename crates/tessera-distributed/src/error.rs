//! Errors of cluster set-up and communication. Each names the rank (and its address) at fault,
//! so a failure on one machine reads the same on every other.

use std::fmt;

/// What went wrong, with enough context to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The environment or hostfile is missing or inconsistent (says which variable or key).
    Config(String),
    /// A peer could not be reached, was lost, hung past the timeout, or closed the connection.
    Peer {
        rank: usize,
        addr: String,
        msg: String,
    },
    /// A peer failed the handshake (wrong secret, wrong cluster) or sent a malformed frame.
    Protocol {
        rank: usize,
        addr: String,
        msg: String,
    },
    /// Another rank reported a failure and aborted the group.
    Aborted(String),
    /// A local I/O failure (binding the listener, spawning a process).
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "cluster configuration: {m}"),
            Error::Peer { rank, addr, msg } => write!(f, "rank {rank} ({addr}): {msg}"),
            Error::Protocol { rank, addr, msg } => {
                write!(f, "rank {rank} ({addr}): protocol error: {msg}")
            }
            Error::Aborted(m) => write!(f, "group aborted: {m}"),
            Error::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// Result with the distributed [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// As a core error, for failures that surface at `eval` of a collective node.
    pub fn into_core(self, op: &'static str) -> tessera_core::Error {
        tessera_core::Error::Distributed {
            op,
            msg: self.to_string(),
        }
    }
}
