//! The physical floor of a replicated write on this machine: one fdatasync
//! of the data disk plus two loopback round trips (client → leader, leader
//! → follower). Measured on the same filesystem as the clusters' data.

use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::error::BenchError;
use crate::stats::Latency;
use crate::stats::micros;

/// `n` appends of 320 bytes (a 256-byte value with its key and framing),
/// each followed by `fdatasync`, in a file under `dir`.
pub fn fdatasync(dir: &Path, n: usize) -> Result<Latency, BenchError> {
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| BenchError::io(format!("cannot create {}", path.display()), e))?;
    let block = [0x5au8; 320];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        f.write_all(&block)
            .and_then(|_| f.sync_data())
            .map_err(|e| BenchError::io("fdatasync probe failed", e))?;
        samples.push(micros(t0.elapsed()));
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(Latency::of(samples))
}

/// `n` one-byte ping-pongs over a loopback TCP connection (TCP_NODELAY),
/// between two threads.
pub fn loopback_rtt(n: usize) -> Result<Latency, BenchError> {
    let io = |e| BenchError::io("loopback probe failed", e);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr).map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    let mut samples = Vec::with_capacity(n);
    let mut b = [1u8; 1];
    for _ in 0..n {
        let t0 = Instant::now();
        s.write_all(&b).map_err(io)?;
        s.read_exact(&mut b).map_err(io)?;
        samples.push(micros(t0.elapsed()));
    }
    drop(s);
    let _ = echo.join();
    Ok(Latency::of(samples))
}
