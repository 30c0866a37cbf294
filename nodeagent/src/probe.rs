//! Liveness and readiness probes: exec in the container, an HTTP GET or a
//! TCP connect to the pod's IP, on the probe's schedule (initialDelay,
//! period, timeout, success and failure thresholds, with Kubernetes'
//! defaults). One task per probe of a running container; the pod manager
//! reads the verdicts and stops probers of containers that are gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rafter_proto::api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::runtime::ContainerRuntime;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
}

/// A probe's schedule, Kubernetes' defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Schedule {
    pub fn of(p: &api::Probe) -> Self {
        let secs =
            |v: i32, default: u64| Duration::from_secs(if v > 0 { v as u64 } else { default });
        Schedule {
            initial_delay: Duration::from_secs(p.initial_delay_seconds.max(0) as u64),
            period: secs(p.period_seconds, 10),
            timeout: secs(p.timeout_seconds, 1),
            success_threshold: p.success_threshold.max(1) as u32,
            failure_threshold: if p.failure_threshold > 0 {
                p.failure_threshold as u32
            } else {
                3
            },
        }
    }
}

/// Consecutive results turned into a verdict, with the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    successes: u32,
    failures: u32,
}

impl Verdict {
    /// Before the first result: readiness starts not ready, liveness alive.
    pub fn initial(kind: ProbeKind) -> Self {
        Verdict {
            ok: kind == ProbeKind::Liveness,
            successes: 0,
            failures: 0,
        }
    }

    /// Takes one result.
    pub fn record(&mut self, success: bool, schedule: &Schedule) {
        if success {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= schedule.success_threshold {
                self.ok = true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= schedule.failure_threshold {
                self.ok = false;
            }
        }
    }
}

/// Resolves a probe port: a number, or the name of one of the container's
/// ports.
pub fn resolve_port(port: &str, container: &api::Container) -> Option<u16> {
    if let Ok(n) = port.parse::<u16>() {
        return Some(n);
    }
    container
        .ports
        .iter()
        .find(|p| p.name == port)
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// Where and how to probe.
#[derive(Debug, Clone)]
pub struct Target {
    pub container_id: String,
    pub pod_ip: String,
    pub container: api::Container,
}

/// Runs one probe attempt; Err says why it failed.
pub async fn attempt(
    runtime: &dyn ContainerRuntime,
    probe: &api::Probe,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let out = runtime
            .exec(&target.container_id, &exec.command, timeout)
            .await
            .map_err(|e| e.to_string())?;
        return if out.exit_code == 0 {
            Ok(())
        } else {
            Err(format!("command exited with {}", out.exit_code))
        };
    }
    let addr = |port: &str, host: &str| -> Result<SocketAddr, String> {
        let port = resolve_port(port, &target.container).ok_or_else(|| {
            format!("port {port:?} is neither a number nor a named container port")
        })?;
        let host = if host.is_empty() {
            &target.pod_ip
        } else {
            host
        };
        format!("{host}:{port}")
            .parse()
            .map_err(|e| format!("bad probe address {host}:{port}: {e}"))
    };
    if let Some(tcp) = &probe.tcp_socket {
        let a = addr(&tcp.port, &tcp.host)?;
        return match tokio::time::timeout(timeout, TcpStream::connect(a)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {a}: {e}")),
            Err(_) => Err(format!("dial tcp {a}: timed out")),
        };
    }
    if let Some(http) = &probe.http_get {
        let a = addr(&http.port, &http.host)?;
        let path = if http.path.is_empty() {
            "/"
        } else {
            &http.path
        };
        return match tokio::time::timeout(timeout, http_get(a, path, &http.http_headers)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Err(format!("Get http://{a}{path}: {e}")),
            Err(_) => Err(format!("Get http://{a}{path}: timed out")),
        };
    }
    Err("the probe has no exec, httpGet or tcpSocket action".into())
}

/// A minimal HTTP/1.0 GET: returns the status code. (A probe needs only
/// the status line; no body is read.)
async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[api::HttpHeader],
) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: rafter-probe/1.0\r\n");
    for h in headers {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "not an HTTP response: {:?}",
                line.lines().next().unwrap_or("")
            ))
        })
}

/// The probers of this node, keyed by (container id, kind).
#[derive(Default)]
pub struct Probers {
    running: Mutex<HashMap<(String, ProbeKind), (Arc<Mutex<Verdict>>, JoinHandle<()>)>>,
}

impl Probers {
    /// The verdict of `kind` for container `id`, starting its prober when
    /// it has none.
    pub fn verdict(
        &self,
        runtime: &Arc<dyn ContainerRuntime>,
        kind: ProbeKind,
        probe: &api::Probe,
        target: &Target,
    ) -> bool {
        let mut running = self.running.lock().expect("probers lock");
        let key = (target.container_id.clone(), kind);
        if let Some((v, _)) = running.get(&key) {
            return v.lock().expect("verdict lock").ok;
        }
        let verdict = Arc::new(Mutex::new(Verdict::initial(kind)));
        let schedule = Schedule::of(probe);
        let task = tokio::spawn(run(
            runtime.clone(),
            probe.clone(),
            target.clone(),
            schedule,
            verdict.clone(),
            kind,
        ));
        running.insert(key, (verdict, task));
        Verdict::initial(kind).ok
    }

    /// Stops the probers of containers not in `alive`.
    pub fn retain(&self, alive: &std::collections::HashSet<String>) {
        self.running
            .lock()
            .expect("probers lock")
            .retain(|(id, _), (_, task)| {
                let keep = alive.contains(id);
                if !keep {
                    task.abort();
                }
                keep
            });
    }
}

async fn run(
    runtime: Arc<dyn ContainerRuntime>,
    probe: api::Probe,
    target: Target,
    schedule: Schedule,
    verdict: Arc<Mutex<Verdict>>,
    kind: ProbeKind,
) {
    tokio::time::sleep(schedule.initial_delay).await;
    let mut tick = tokio::time::interval(schedule.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = attempt(runtime.as_ref(), &probe, &target, schedule.timeout).await;
        if let Err(why) = &result {
            tracing::debug!(container = %target.container.name, ?kind, %why, "probe failed");
        }
        verdict
            .lock()
            .expect("verdict lock")
            .record(result.is_ok(), &schedule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_turn_results_into_a_verdict() {
        let s = Schedule::of(&api::Probe {
            success_threshold: 2,
            failure_threshold: 2,
            ..Default::default()
        });
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        let mut v = Verdict::initial(ProbeKind::Readiness);
        assert!(!v.ok);
        v.record(true, &s);
        assert!(!v.ok);
        v.record(true, &s);
        assert!(v.ok);
        v.record(false, &s);
        assert!(v.ok);
        v.record(false, &s);
        assert!(!v.ok);
        assert!(Verdict::initial(ProbeKind::Liveness).ok);
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c = api::Container {
            ports: vec![api::ContainerPort {
                name: "http".into(),
                container_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(resolve_port("80", &c), Some(80));
        assert_eq!(resolve_port("http", &c), Some(8080));
        assert_eq!(resolve_port("grpc", &c), None);
    }

    #[tokio::test]
    async fn an_http_probe_reads_the_status_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
                    .await;
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(http_get(addr, "/", &[]).await.unwrap(), 503);
    }
}
