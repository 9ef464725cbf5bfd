//! A fault-injecting TCP proxy for the tests: forwards one connection to an upstream address
//! and, in the client-to-server direction, can add latency, stall, cut the connection, end it
//! in the middle of a frame, or flip a byte, each after a given number of bytes.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Forward everything, each read delayed by this long.
    Latency(Duration),
    /// After `n` bytes, stop forwarding (the connection stays open).
    Stall(usize),
    /// After `n` bytes, close both directions.
    Cut(usize),
    /// Forward `n` bytes (which ends inside a frame), then half-close towards the server.
    Truncate(usize),
    /// Flip the bits of byte `n`.
    Corrupt(usize),
}

/// Listens on a free loopback port; returns it. The proxy serves every connection it accepts
/// (each to `upstream`) until the process ends.
pub fn start(upstream: String, fault: Fault) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { break };
            // The upstream rank may not listen yet: keep trying for a while, as a client would.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let server = loop {
                match TcpStream::connect(&upstream) {
                    Ok(s) => break Some(s),
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break None,
                }
            };
            let Some(server) = server else { continue };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || forward(client, server, Some(fault)));
            std::thread::spawn(move || forward(s2, c2, None));
        }
    });
    port
}

fn forward(mut from: TcpStream, mut to: TcpStream, fault: Option<Fault>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        match fault {
            Some(Fault::Latency(d)) => std::thread::sleep(d),
            Some(Fault::Stall(at)) if seen + n > at => {
                let keep = at.saturating_sub(seen);
                let _ = to.write_all(&chunk[..keep]);
                // Hold both connections open without forwarding, until the peers give up.
                let mut sink = [0u8; 4096];
                while matches!(from.read(&mut sink), Ok(k) if k > 0) {}
                return;
            }
            Some(Fault::Cut(at)) if seen + n > at => {
                let keep = at.saturating_sub(seen);
                let _ = to.write_all(&chunk[..keep]);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Truncate(at)) if seen + n > at => {
                let keep = at.saturating_sub(seen);
                let _ = to.write_all(&chunk[..keep]);
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Some(Fault::Corrupt(at)) if seen <= at && at < seen + n => chunk[at - seen] ^= 0xff,
            _ => {}
        }
        if to.write_all(chunk).is_err() {
            break;
        }
        seen += n;
    }
    let _ = to.shutdown(Shutdown::Write);
}
