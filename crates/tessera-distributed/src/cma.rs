//! Reading a same-host peer's memory directly (Linux cross-memory attach, `process_vm_readv`):
//! one copy from the peer's buffer into ours, where the shared-memory ring takes two (into the
//! ring, out of it). Used for medium and large all-reduces between ranks on one host (see
//! `ring.rs`), as OpenMPI's shared-memory transport does.
//!
//! The kernel allows it between processes of the same user unless a security module forbids it
//! (Yama's `ptrace_scope` of 2 or 3, a seccomp filter, a container without the capability), so
//! every same-host pair checks it once when the mesh is built ([`probe_value`]) and keeps the
//! ring where it fails. Set `TESSERA_CMA=0` to never use it.

use std::io;

/// A value at a fixed address in this process that a peer reads to check it can.
static PROBE: u64 = 0x7e55_e7a5_c3a0_0001;

/// Whether cross-memory reads may be tried at all (`TESSERA_CMA=0` turns them off).
pub(crate) fn enabled() -> bool {
    std::env::var("TESSERA_CMA").map_or(true, |v| v.trim() != "0")
}

/// This process's id and the address of its probe value, for a peer to check it can read here.
pub(crate) fn probe_offer() -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
    b[8..].copy_from_slice(&(std::ptr::addr_of!(PROBE) as u64).to_le_bytes());
    b
}

/// Reads a peer's probe value through the offer it sent; `Some(pid)` when that worked.
pub(crate) fn probe_value(offer: &[u8; 16]) -> Option<i32> {
    let pid = i32::try_from(u64::from_le_bytes(offer[..8].try_into().ok()?)).ok()?;
    let addr = u64::from_le_bytes(offer[8..].try_into().ok()?);
    let mut v = [0u8; 8];
    read(pid, addr, &mut v).ok()?;
    (u64::from_le_bytes(v) == PROBE).then_some(pid)
}

/// Copies `dst.len()` bytes from address `addr` of process `pid` into `dst`.
pub(crate) fn read(pid: i32, addr: u64, dst: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < dst.len() {
        let local = libc::iovec {
            iov_base: dst[done..].as_mut_ptr() as *mut libc::c_void,
            iov_len: dst.len() - done,
        };
        let remote = libc::iovec {
            iov_base: (addr as usize).wrapping_add(done) as *mut libc::c_void,
            iov_len: dst.len() - done,
        };
        // SAFETY: `local` is our own writable buffer of that length; the kernel checks the
        // remote range and fails (EFAULT) rather than touching anything outside it.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "cross-memory read returned nothing",
            ));
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_refuses_bad_addresses() {
        // Our own process stands in for a peer: the same system call, the same checks.
        let offer = probe_offer();
        assert_eq!(probe_value(&offer), Some(std::process::id() as i32));
        let src: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let mut dst = vec![0u8; src.len()];
        read(std::process::id() as i32, src.as_ptr() as u64, &mut dst).unwrap();
        assert_eq!(dst, src);
        let mut small = [0u8; 8];
        assert!(read(std::process::id() as i32, 8, &mut small).is_err());
        let mut bad = offer;
        bad[8..].copy_from_slice(&16u64.to_le_bytes());
        assert_eq!(probe_value(&bad), None);
    }
}
