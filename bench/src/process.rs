//! Server processes the benchmark starts, kills and restarts: one
//! [`Server`] per cluster member, killed (SIGKILL) when dropped, so an error,
//! a panic or Ctrl-C never leaves one behind.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;

use crate::error::BenchError;

/// How to run one member.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended across restarts).
    pub log: PathBuf,
}

/// One member process, possibly not running (after [`Server::kill`]).
#[derive(Debug)]
pub struct Server {
    pub spec: ServerSpec,
    child: Option<Child>,
}

impl Server {
    pub fn new(spec: ServerSpec) -> Server {
        Server { spec, child: None }
    }

    /// Starts the process unless it runs already.
    pub fn start(&mut self) -> Result<(), BenchError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .map_err(|e| BenchError::io(format!("cannot open {}", self.spec.log.display()), e))?;
        let stderr = log
            .try_clone()
            .map_err(|e| BenchError::io("cannot duplicate a log file handle", e))?;
        let child = Command::new(&self.spec.program)
            .args(&self.spec.args)
            .envs(self.spec.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                name: self.spec.name.clone(),
                source,
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// kill -9, and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    /// Resident anonymous memory in KiB (`RssAnon`: heap, stacks; not the
    /// program's code and other file pages).
    pub fn anon_kib(&self) -> Option<u64> {
        status_kib(self.pid()?, "RssAnon:")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `VmRSS` of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_readable() {
        let kib = rss_kib(std::process::id()).unwrap();
        assert!(kib > 100, "{kib}");
    }
}
