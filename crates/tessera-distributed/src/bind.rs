//! Binding the ranks a launcher starts on one host to disjoint sets of cores.
//!
//! Why: ranks on one host talk through shared memory and wait for each other by spinning, then
//! sleeping. A sleeping rank is light, so the kernel's scheduler may wake it on the core of the
//! rank that woke it; two ranks then take turns on one core while the other idles, and every
//! small message costs a context switch (measured here: a 4-byte all_sum between two ranks
//! took 8-10 µs in about half of the launches, 0.3-1 µs in the rest). Giving each rank its own
//! cores removes that mode, and each rank's thread pool sizes itself to its share (the pool
//! reads the affinity mask), so ranks never oversubscribe the machine. OpenMPI binds to cores
//! by default for the same reason.

/// The CPUs this process may run on, in increasing order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Splits `cpus` among `ranks` ranks: disjoint runs of neighbouring CPUs, sizes differing by at
/// most one. `None` when there are more ranks than CPUs (they must share; nothing is bound).
pub fn core_sets(cpus: &[usize], ranks: usize) -> Option<Vec<Vec<usize>>> {
    if ranks == 0 || ranks > cpus.len() {
        return None;
    }
    let (each, extra) = (cpus.len() / ranks, cpus.len() % ranks);
    let mut at = 0;
    Some(
        (0..ranks)
            .map(|r| {
                let n = each + usize::from(r < extra);
                let set = cpus[at..at + n].to_vec();
                at += n;
                set
            })
            .collect(),
    )
}

/// A CPU mask for `sched_setaffinity`.
#[derive(Clone, Copy)]
pub struct Mask(libc::cpu_set_t);

impl Mask {
    pub fn of(cpus: &[usize]) -> Mask {
        // SAFETY: a zeroed cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: c is below CPU_SETSIZE, inside the set.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        Mask(set)
    }

    /// Binds the calling thread (and the threads and programs it starts later). Only a system
    /// call: safe to run between fork and exec.
    pub fn apply(&self) -> std::io::Result<()> {
        // SAFETY: sched_setaffinity reads a valid cpu_set_t of the size given.
        let r =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_disjoint_cover_the_cpus_and_are_even() {
        let cpus = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11];
        for ranks in 1..=cpus.len() {
            let sets = core_sets(&cpus, ranks).unwrap();
            assert_eq!(sets.len(), ranks);
            let all: Vec<usize> = sets.concat();
            assert_eq!(all, cpus, "{ranks} ranks: every CPU once, in order");
            let (lo, hi) = (
                sets.iter().map(Vec::len).min().unwrap(),
                sets.iter().map(Vec::len).max().unwrap(),
            );
            assert!(lo >= 1 && hi - lo <= 1, "{ranks} ranks: sizes {lo}..{hi}");
        }
        assert!(core_sets(&cpus, cpus.len() + 1).is_none());
        assert!(core_sets(&[], 1).is_none());
        assert!(core_sets(&cpus, 0).is_none());
    }

    #[test]
    fn a_thread_bound_to_its_own_cpus_sees_only_them() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let mine = vec![cpus[cpus.len() - 1]];
        let seen = std::thread::spawn(move || {
            Mask::of(&mine).apply().unwrap();
            (allowed_cpus(), mine)
        })
        .join()
        .unwrap();
        assert_eq!(seen.0, seen.1);
    }
}
