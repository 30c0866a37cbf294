//! Slow links in user space (this kernel has no `tc netem`): one TCP proxy
//! per ordered pair of masters, in the harness, that holds every chunk of
//! data for a fixed delay before passing it on, in order.
//!
//! Traffic is steered through the proxies with iptables inside each
//! master's namespace ([`crate::netns::Netns::redirect`]): a DNAT rule sends
//! new connections to a peer's port to the proxy for that link, and a
//! tcp-reset rule kills the direct connections that were open before, so
//! that the masters reconnect — through the proxies. Healing removes the
//! rules and stops the proxies, closing every proxied connection, so the
//! masters reconnect directly again.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Running proxies; dropping them closes every proxied connection.
#[derive(Debug, Default)]
pub struct SlowLinks {
    tasks: Vec<JoinHandle<()>>,
}

impl SlowLinks {
    /// Starts a proxy for each `(from, to)` link, listening on `host_ip`
    /// (a free port) and forwarding to `targets[to]`, delaying each
    /// direction by `delay`. Returns the proxies and, per link, the port.
    pub async fn start(
        host_ip: &str,
        targets: &[String],
        links: &[(usize, usize)],
        delay: Duration,
    ) -> io::Result<(SlowLinks, Vec<u16>)> {
        let mut proxies = SlowLinks::default();
        let mut ports = Vec::new();
        for &(_, to) in links {
            let listener = TcpListener::bind((host_ip, 0)).await?;
            ports.push(listener.local_addr()?.port());
            let target = targets[to].clone();
            proxies
                .tasks
                .push(tokio::spawn(accept_loop(listener, target, delay)));
        }
        Ok((proxies, ports))
    }
}

impl Drop for SlowLinks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops the set of
/// connection tasks, which aborts (closes) them too.
async fn accept_loop(listener: TcpListener, target: String, delay: Duration) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((inbound, _)) = accepted else { continue };
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&target).await {
                        relay(inbound, outbound, delay).await;
                    }
                });
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(a: TcpStream, b: TcpStream, delay: Duration) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::join!(pump(ar, bw, delay), pump(br, aw, delay));
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn proxy_delays_both_directions_and_keeps_order() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let delay = Duration::from_millis(100);
        let (proxies, ports) = SlowLinks::start("127.0.0.1", &[echo_addr], &[(1, 0)], delay)
            .await
            .unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", ports[0])).await.unwrap();
        let started = std::time::Instant::now();
        c.write_all(b"hello ").await.unwrap();
        c.write_all(b"world").await.unwrap();
        let mut got = Vec::new();
        while got.len() < 11 {
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello world");
        assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
        drop(proxies);
        // The proxied connection is closed once the proxies are gone.
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
