//! `Group`: the handle user code holds. It carries rank and size, runs collectives (lazy ops
//! that become graph nodes), and splits into sub-groups.

use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::mesh::Mesh;
use crate::ring::RingComm;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tessera_core::collective::{CollectiveReduce, Communicator, GroupRef};
use tessera_core::{Array, Dtype, ops};

/// Which communication backend [`init`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The environment's choice (`TESSERA_BACKEND`), else `Ring`.
    Any,
    /// TCP between all ranks (built in, nothing to install).
    Ring,
    /// The system's MPI (cargo feature `mpi`; ranks started by `mpirun`).
    Mpi,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Backend> {
        match s {
            "any" | "" => Ok(Backend::Any),
            "ring" => Ok(Backend::Ring),
            "mpi" => Ok(Backend::Mpi),
            other => Err(Error::Config(format!(
                "unknown backend {other:?} (expected ring or mpi)"
            ))),
        }
    }
}

/// The group of a process running alone: every collective is the identity.
struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn backend(&self) -> &str {
        "solo"
    }
    fn all_reduce(&self, _: CollectiveReduce, _: Dtype, _: &mut [u8]) -> tessera_core::Result<()> {
        Ok(())
    }
    fn all_gather(&self, input: &[u8], output: &mut [u8]) -> tessera_core::Result<()> {
        output.copy_from_slice(input);
        Ok(())
    }
    fn reduce_scatter(
        &self,
        _: CollectiveReduce,
        _: Dtype,
        input: &[u8],
        output: &mut [u8],
    ) -> tessera_core::Result<()> {
        output.copy_from_slice(input);
        Ok(())
    }
    fn send(&self, _: &[u8], dst: usize) -> tessera_core::Result<()> {
        Err(no_peer("send", dst))
    }
    fn recv(&self, _: &mut [u8], src: usize) -> tessera_core::Result<()> {
        Err(no_peer("recv", src))
    }
}

fn no_peer(op: &'static str, r: usize) -> tessera_core::Error {
    tessera_core::Error::Invalid {
        op,
        msg: format!("rank {r} does not exist in a group of one"),
    }
}

/// A group of processes. Cheap to clone; collectives on it are lazy ops.
#[derive(Clone)]
pub struct Group {
    handle: GroupRef,
    ring: Option<Arc<RingComm>>,
    /// A backend that splits its own communicators (MPI): `split` defers to it.
    splitter: Option<Arc<dyn Splitter>>,
    splits: Arc<AtomicU32>,
}

/// Splitting for backends with their own sub-communicators (MPI's `MPI_Comm_split`).
pub(crate) trait Splitter: Send + Sync {
    /// As [`Group::split`].
    fn split(&self, color: u32, key: i64) -> Result<Group>;
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.handle)
    }
}

/// Joins the cluster described by the environment (see [`crate::config`]); a process started
/// without one (no `TESSERA_WORLD_SIZE`) gets a group of size 1, so the same program runs alone.
pub fn init(backend: Backend) -> Result<Group> {
    let backend = match backend {
        Backend::Any => match std::env::var("TESSERA_BACKEND") {
            Ok(b) if !b.is_empty() && b != "any" => Backend::parse(&b)?,
            // Started by mpirun rather than `tessera launch`: use MPI when it is built in.
            _ if cfg!(feature = "mpi")
                && std::env::var_os("TESSERA_WORLD_SIZE").is_none()
                && (std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
                    || std::env::var_os("PMI_SIZE").is_some()) =>
            {
                Backend::Mpi
            }
            _ => Backend::Ring,
        },
        b => b,
    };
    if backend == Backend::Mpi {
        return mpi_world();
    }
    // The world group from the environment is made once per process: a second `init` returns
    // it again (its connections and listening port are already taken).
    static WORLD: std::sync::Mutex<Option<Group>> = std::sync::Mutex::new(None);
    let mut world = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(g) = world.as_ref() {
        return Ok(g.clone());
    }
    let g = match ClusterConfig::from_env()? {
        None => Group::solo(),
        Some(cfg) => init_with(&cfg)?,
    };
    *world = Some(g.clone());
    Ok(g)
}

#[cfg(feature = "mpi")]
fn mpi_world() -> Result<Group> {
    crate::mpi::world()
}

#[cfg(not(feature = "mpi"))]
fn mpi_world() -> Result<Group> {
    Err(Error::Config(
        "the mpi backend is not available in this build: rebuild tessera-distributed with \
         `--features mpi` (needs the system's MPI, e.g. Debian's libopenmpi-dev), or use \
         --backend ring"
            .into(),
    ))
}

/// Joins a cluster described explicitly (tests, programs with their own configuration).
pub fn init_with(cfg: &ClusterConfig) -> Result<Group> {
    if cfg.world_size == 1 {
        cfg.validate()?;
        return Ok(Group::solo());
    }
    let mesh = Arc::new(Mesh::connect(cfg)?);
    let ring = Arc::new(RingComm {
        members: (0..cfg.world_size).collect(),
        rank: cfg.rank,
        id: 1,
        mesh,
    });
    ring.agree_small_all_reduce()?;
    Ok(Group {
        handle: GroupRef(ring.clone()),
        ring: Some(ring),
        splitter: None,
        splits: Arc::new(AtomicU32::new(0)),
    })
}

impl Group {
    /// The group of a process running alone.
    pub fn solo() -> Group {
        Group {
            handle: GroupRef(Arc::new(Solo)),
            ring: None,
            splitter: None,
            splits: Arc::new(AtomicU32::new(0)),
        }
    }

    /// A group over a backend that splits its own communicators.
    #[cfg(feature = "mpi")]
    pub(crate) fn from_backend<C: Communicator + Splitter + 'static>(comm: Arc<C>) -> Group {
        Group {
            handle: GroupRef(comm.clone()),
            ring: None,
            splitter: Some(comm),
            splits: Arc::new(AtomicU32::new(0)),
        }
    }

    pub fn rank(&self) -> usize {
        self.handle.rank()
    }

    pub fn size(&self) -> usize {
        self.handle.size()
    }

    /// The handle the core's collective ops take.
    pub fn handle(&self) -> &GroupRef {
        &self.handle
    }

    /// Splits the group: ranks passing the same `color` form a new group, ordered by `key`
    /// (ties by rank). Every rank of this group must call it, in the same order relative to its
    /// other collectives. Sub-groups share this group's connections.
    pub fn split(&self, color: u32, key: i64) -> Result<Group> {
        if let Some(s) = &self.splitter {
            return s.split(color, key);
        }
        let Some(ring) = &self.ring else {
            return Ok(self.clone());
        };
        let n = self.size();
        let mut mine = [0u8; 16];
        mine[..8].copy_from_slice(&(color as i64).to_le_bytes());
        mine[8..].copy_from_slice(&key.to_le_bytes());
        let mut all = vec![0u8; 16 * n];
        ring.all_gather(&mine, &mut all)
            .map_err(|e| Error::Aborted(format!("split: {e}")))?;
        let entry = |r: usize| {
            let c = i64::from_le_bytes(all[16 * r..16 * r + 8].try_into().unwrap_or_default());
            let k = i64::from_le_bytes(all[16 * r + 8..16 * r + 16].try_into().unwrap_or_default());
            (c, k)
        };
        let mut same: Vec<(i64, usize)> = (0..n)
            .filter(|&r| entry(r).0 == color as i64)
            .map(|r| (entry(r).1, r))
            .collect();
        same.sort();
        let members: Vec<usize> = same.iter().map(|&(_, r)| ring.members[r]).collect();
        let rank = same
            .iter()
            .position(|&(_, r)| r == self.rank())
            .ok_or_else(|| {
                Error::Config("split: this rank is missing from its own color".into())
            })?;
        let nth = self.splits.fetch_add(1, Ordering::Relaxed);
        // Same on every member: derived from the parent id, the split count and the color.
        let id = ring
            .id
            .wrapping_mul(0x9E37_79B9)
            .wrapping_add(nth.wrapping_mul(0x85EB_CA6B))
            .wrapping_add(color.wrapping_mul(0xC2B2_AE35))
            | 1;
        if members.len() == 1 {
            return Ok(Group::solo());
        }
        let sub = Arc::new(RingComm {
            mesh: ring.mesh.clone(),
            members,
            rank,
            id,
        });
        Ok(Group {
            handle: GroupRef(sub.clone()),
            ring: Some(sub),
            splitter: None,
            splits: Arc::new(AtomicU32::new(0)),
        })
    }

    /// How small all-reduces run on this group: `"direct"` (every rank sends to every other:
    /// one latency) or `"doubling"` (recursive doubling: fewer messages, chosen by all ranks
    /// together where a host runs more ranks than cores, or by `TESSERA_SMALL_ALLREDUCE`) on
    /// the ring backend; `None` for a group of one or another backend.
    pub fn small_all_reduce(&self) -> Option<&'static str> {
        let ring = self.ring.as_ref().filter(|r| r.members.len() > 1)?;
        Some(if ring.small_by_doubling() {
            "doubling"
        } else {
            "direct"
        })
    }

    /// See [`ops::all_sum`].
    pub fn all_sum(&self, x: &Array) -> tessera_core::Result<Array> {
        ops::all_sum(x, &self.handle)
    }
    /// See [`ops::all_max`].
    pub fn all_max(&self, x: &Array) -> tessera_core::Result<Array> {
        ops::all_max(x, &self.handle)
    }
    /// See [`ops::all_min`].
    pub fn all_min(&self, x: &Array) -> tessera_core::Result<Array> {
        ops::all_min(x, &self.handle)
    }
    /// See [`ops::all_gather`].
    pub fn all_gather(&self, x: &Array) -> tessera_core::Result<Array> {
        ops::all_gather(x, &self.handle)
    }
    /// See [`ops::sum_scatter`].
    pub fn sum_scatter(&self, x: &Array) -> tessera_core::Result<Array> {
        ops::sum_scatter(x, &self.handle)
    }
    /// See [`ops::send`].
    pub fn send(&self, x: &Array, dst: usize) -> tessera_core::Result<Array> {
        ops::send(x, dst, &self.handle)
    }
    /// See [`ops::recv`].
    pub fn recv(&self, shape: &[usize], dtype: Dtype, src: usize) -> tessera_core::Result<Array> {
        ops::recv(shape, dtype, src, &self.handle)
    }
    /// See [`ops::recv_like`].
    pub fn recv_like(&self, x: &Array, src: usize) -> tessera_core::Result<Array> {
        ops::recv_like(x, src, &self.handle)
    }
    /// See [`ops::barrier`].
    pub fn barrier(&self) -> tessera_core::Result<()> {
        ops::barrier(&self.handle)
    }
}
