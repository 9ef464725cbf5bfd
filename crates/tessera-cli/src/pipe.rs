//! Output into a closed pipe (`tessera bench ops --json | head -1`).
//!
//! Rust programs start with SIGPIPE ignored, so a write to a pipe whose reader has gone returns
//! an error, and `println!` panics on it with a backtrace. Commands whose job is to print
//! (demo, info, generate, quantize, `bench ops|train|llm`, the version and help) take the
//! Unix tools' behaviour instead: the default disposition, under which the process ends quietly
//! when its reader does. The cluster commands keep SIGPIPE ignored: their sockets and the
//! launcher's pipes to its ranks report a lost peer as an error that names it.

/// Restores the default SIGPIPE disposition (a no-op off Unix).
pub fn die_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler and touches no
    // Rust state; called on the main thread before any other thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
