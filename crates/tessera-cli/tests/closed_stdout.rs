//! A printing command whose reader goes away (`tessera demo | head -1`) ends quietly, as Unix
//! tools do, instead of panicking with a backtrace on the failed write.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// SIGPIPE's number (13 on Linux and macOS).
const SIGPIPE: i32 = 13;

#[test]
fn demo_into_a_closed_pipe_ends_without_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("demo")
        .env("TESSERA_NUM_THREADS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end at once: the demo prints its later lines after some computation, so
    // those writes meet a pipe without a reader.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(SIGPIPE),
        "status {:?}, stderr: {stderr}",
        out.status
    );
}
