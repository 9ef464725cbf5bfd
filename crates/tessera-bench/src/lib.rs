//! Benchmark harness (filled in below).
