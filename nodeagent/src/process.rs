//! The plain-process implementation of [`ContainerRuntime`], for machines
//! without Docker: every container is a process on the host, in the spirit
//! of Nomad's `raw_exec` driver (`rafter agent --container-runtime process`).
//!
//! **State on disk, nothing in memory.** Everything lives under the root
//! given at construction (the agent passes `<data-dir>/process-runtime`):
//!
//! ```text
//! images/<name with / and : as _>/<tag>/    an "image": a directory (bin/ goes on PATH)
//! containers/<id>/config.json               what create() was given (mode 0600: env may hold secrets)
//! containers/<id>/started.json              pid, its start time in /proc, boot id, started_at
//! containers/<id>/exit_code                 written once the command exited (mtime = finished_at)
//! containers/<id>/log                       stdout and stderr, appended
//! ```
//!
//! Every file is written whole (temporary file, then rename), so `inspect`
//! and `list` rebuild the state from disk at any moment, and a restarted
//! agent adopts the processes that still run instead of starting them
//! again.
//!
//! **The shim.** A container's command runs under `/bin/sh` (`SHIM`),
//! started as `setsid [unshare --mount] /bin/sh -c SHIM ...`: a session and
//! process group of its own (the process survives the agent; the agent never
//! kills it on drop), the same pid through each `exec`. The shim waits for
//! the agent's "go" on its stdin (sent once `started.json` is on disk, so no
//! process ever runs unrecorded), makes the bind mounts, starts the command,
//! forwards SIGTERM to it, and writes its exit status to `exit_code` before
//! killing what is left of its process group — as a container's processes
//! die with its main one. So the exit code is known even when the agent
//! that started the process is gone. A process found dead with no
//! `exit_code` (the shim was SIGKILLed, or the machine rebooted) is recorded
//! as exited with 137 ("Error"). The pid is trusted only with the start
//! time `/proc/<pid>/stat` gave when it started and the same boot id, so a
//! reused pid is never mistaken for the container.
//!
//! **Pods.** The sandbox (the [`SANDBOX_IMAGE`] container) is a record with
//! no process, running until stopped; its IP is the node's. App containers
//! run on the host network, so a pod's IP is its node's IP.
//!
//! **Without unsafe code.** The workspace forbids `unsafe`, so no
//! `pre_exec`: `setsid(1)`, `unshare(1)`, `mount(8)`, `nsenter(1)` (all in
//! util-linux) and `kill(1)` do what `setsid(2)`, `unshare(2)`, `mount(2)`,
//! `setns(2)` and `kill(2)` would.
//!
//! Limits (docs/AGENT.md, "The plain-process runtime"): no network
//! isolation (host network, pod IP = node IP, two pods cannot use one port);
//! images are directories, never pulled; volume mounts need root (a private
//! mount namespace per container; the mount points are created on the
//! host's file system); processes run as the agent's user and see the
//! host's file system, hostname and processes; cpu and memory limits are
//! not enforced; logs have no timestamps (`--timestamps` is ignored) and are
//! never rotated; a process that leaves its process group (a daemon that
//! calls `setsid`) escapes stop and remove; interactive exec is refused.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::runtime::{
    ContainerConfig, ContainerInfo, ContainerRunState, ContainerRuntime, ExecOutput, LogOptions,
    NetworkAttachment, Result, RuntimeError, SANDBOX_IMAGE,
};

/// The PATH of the shim (to find mkdir, mount, mv) and, behind the image's
/// `bin/`, of a container whose env sets none.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The shell the shim and exec run with.
const SH: &str = "/bin/sh";

/// The shim: `sh -c SHIM rafter-shim DIR PATH WORKDIR [SRC DST ro|rw]... -- COMMAND...`.
///
/// Its variables are `_rft_`-prefixed so that a container env variable of
/// the same name is not changed under the command. A SIGTERM that arrives
/// before the command is started is remembered and forwarded once it is.
/// A missing bind source is created as a directory, as Docker does. Exit
/// 126 (and a line in the log) when a mount or the working directory fails.
const SHIM: &str = r#"_rft_term=
trap '_rft_term=1' TERM
_rft_dir=$1 _rft_path=$2 _rft_wd=$3
shift 3
_rft_done() {
  echo "$1" > "$_rft_dir/exit_code.tmp" && mv -f "$_rft_dir/exit_code.tmp" "$_rft_dir/exit_code"
  trap - TERM
  kill -KILL 0 2>/dev/null
  exit "$1"
}
IFS= read -r _rft_go || _rft_go=
exec </dev/null
[ "$_rft_go" = go ] || exit 0
while [ "$1" != -- ]; do
  _rft_src=$1 _rft_dst=$2 _rft_ro=$3
  shift 3
  [ -e "$_rft_src" ] || mkdir -p "$_rft_src"
  if [ -d "$_rft_src" ]; then
    mkdir -p "$_rft_dst"
  else
    mkdir -p "${_rft_dst%/*}" && { [ -e "$_rft_dst" ] || : > "$_rft_dst"; }
  fi && mount --rbind "$_rft_src" "$_rft_dst" && {
    [ "$_rft_ro" != ro ] || mount -o remount,bind,ro "$_rft_dst"
  } || { echo "rafter: cannot mount $_rft_src on $_rft_dst" >&2; _rft_done 126; }
done
shift
cd "$_rft_wd" || { echo "rafter: cannot enter the working directory $_rft_wd" >&2; _rft_done 126; }
_rft_sys=$PATH
PATH=$_rft_path
export PATH
"$@" &
_rft_pid=$!
PATH=$_rft_sys
trap 'kill -TERM "$_rft_pid" 2>/dev/null' TERM
[ -z "$_rft_term" ] || kill -TERM "$_rft_pid" 2>/dev/null
while :; do
  wait "$_rft_pid"
  _rft_rc=$?
  kill -0 "$_rft_pid" 2>/dev/null || break
done
_rft_done "$_rft_rc"
"#;

/// How often stop and `logs -f` look again.
const POLL: Duration = Duration::from_millis(50);
/// How long remove and stop wait for a SIGKILLed process group to go.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The exit code of a container killed with SIGKILL (128 + 9), as Docker
/// reports it.
const KILLED: i64 = 137;

/// The plain-process runtime over one state directory.
pub struct ProcessRuntime {
    root: PathBuf,
    host_ip: Ipv4Addr,
    /// Serialises create, start and remove: two concurrent starts of one
    /// container must not start two processes.
    lock: tokio::sync::Mutex<()>,
}

/// A container's `config.json`: what [`ContainerRuntime::create`] was given,
/// resolved (the command line, PATH and working directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    id: String,
    name: String,
    image: String,
    image_id: String,
    /// A record with no process (the pod's sandbox).
    sandbox: bool,
    /// The command and its arguments (empty for the sandbox).
    argv: Vec<String>,
    /// The env given, without PATH (see `path`).
    env: Vec<(String, String)>,
    /// The container's PATH: the env's own, else the image's `bin/` first.
    path: String,
    working_dir: String,
    mounts: Vec<MountRecord>,
    labels: BTreeMap<String, String>,
    /// `pod:<network>`, `container:<id>` or `none` (nothing is isolated).
    network: String,
    created_at_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MountRecord {
    host_path: String,
    container_path: String,
    read_only: bool,
}

/// A container's `started.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Started {
    /// The shim's pid, which is also the process group and session id of
    /// everything the container started; 0 for the sandbox (no process).
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat` when it started: a reused pid has
    /// another.
    start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id`: nothing survives a reboot.
    boot_id: String,
    started_at_ns: u64,
}

impl ProcessRuntime {
    /// A runtime keeping its state under `root` (created when missing);
    /// sandboxes report `host_ip`, the node's IP, as the pod's.
    pub fn new(root: impl Into<PathBuf>, host_ip: Ipv4Addr) -> Result<ProcessRuntime> {
        let root = root.into();
        for dir in [root.join("containers"), root.join("images")] {
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Unavailable {
                message: format!("creating the process runtime's {}: {e}", dir.display()),
            })?;
        }
        if find_tool("setsid").is_none() {
            return Err(RuntimeError::Unavailable {
                message: "the process runtime needs setsid(1) (util-linux); install util-linux"
                    .into(),
            });
        }
        // A create() cut short leaves its temporary directory.
        if let Ok(entries) = std::fs::read_dir(root.join("containers")) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".create-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(ProcessRuntime {
            root,
            host_ip,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory that is the image `image` (it need not exist):
    /// `<root>/images/<name>/<tag>`, `/` and `:` in the name replaced by `_`,
    /// tag `latest` when none is given. None for a reference that cannot
    /// name a directory (`..`).
    pub fn image_dir(&self, image: &str) -> Option<PathBuf> {
        let (name, tag) = split_image(image);
        let name = name.replace(['/', ':'], "_");
        let tag = tag.replace([':', '/'], "_");
        let bad = |s: &str| s.is_empty() || s == "." || s == "..";
        if bad(&name) || bad(&tag) {
            return None;
        }
        Some(self.root.join("images").join(name).join(tag))
    }

    /// The pid of a running container's process group (its shim), None
    /// when it does not run or has no process (the sandbox).
    pub fn pid(&self, id: &str) -> Option<u32> {
        let dir = self.container_dir(id).ok()?;
        let started = read_started(&dir)?;
        (started.pid != 0 && read_exit(&dir).is_none() && is_alive(&started)).then_some(started.pid)
    }

    /// `<root>/containers/<id>`, for an id this runtime could have made.
    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(not_found(id));
        }
        Ok(self.root.join("containers").join(id))
    }

    /// The record of container `id` (NotFound when there is none).
    fn load(&self, id: &str) -> Result<(PathBuf, Record)> {
        let dir = self.container_dir(id)?;
        let record = read_record(&dir).ok_or_else(|| not_found(id))?;
        Ok((dir, record))
    }

    fn info(&self, dir: &Path, record: Record) -> ContainerInfo {
        let state = run_state(dir);
        let ip = (record.sandbox && matches!(state, ContainerRunState::Running { .. }))
            .then_some(self.host_ip);
        ContainerInfo {
            id: record.id,
            name: record.name,
            image: record.image,
            image_id: record.image_id,
            labels: record.labels,
            state,
            ip,
        }
    }

    /// Spawns the shim of `record` (whose directory is `dir`) and records
    /// it; the command starts once `started.json` is on disk.
    async fn spawn(&self, dir: &Path, record: &Record) -> Result<()> {
        let what = format!("starting container {}", record.name);
        let engine = |e: std::io::Error| RuntimeError::Engine {
            message: format!("{what}: {e}"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("log"))
            .map_err(engine)?;
        let setsid = find_tool("setsid").unwrap_or_else(|| "setsid".into());
        let mut command = tokio::process::Command::new(setsid);
        if !record.mounts.is_empty() {
            let unshare = find_tool("unshare").ok_or_else(|| RuntimeError::Engine {
                message: format!("{what}: volume mounts need unshare(1) (util-linux)"),
            })?;
            command
                .arg(unshare)
                .args(["--mount", "--propagation", "slave"]);
        }
        command
            .args([SH, "-c", SHIM, "rafter-shim"])
            .arg(dir)
            .arg(&record.path)
            .arg(&record.working_dir);
        for m in &record.mounts {
            command.args([
                m.host_path.as_str(),
                m.container_path.as_str(),
                if m.read_only { "ro" } else { "rw" },
            ]);
        }
        command
            .arg("--")
            .args(&record.argv)
            .env_clear()
            .envs(record.env.iter().map(|(k, v)| (k, v)))
            .env("PATH", HOST_PATH)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(engine)?)
            .stderr(log);
        if !record.env.iter().any(|(k, _)| k == "HOME") {
            command.env(
                "HOME",
                std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
            );
        }
        let mut child = command.spawn().map_err(engine)?;
        let mut stdin = child.stdin.take();
        let pid = child.id();
        // Reaped by this task while the agent lives; adopted by init after.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let Some(pid) = pid else {
            return Err(RuntimeError::Engine {
                message: format!("{what}: the process exited at once"),
            });
        };
        // The process cannot have been reaped yet (only the task above
        // waits, and it has not run): its /proc entry is there, zombie or not.
        let Some((_, start_ticks)) = proc_stat(pid) else {
            return Err(RuntimeError::Engine {
                message: format!("{what}: process {pid} vanished before it was recorded"),
            });
        };
        let started = Started {
            pid,
            start_ticks,
            boot_id: boot_id(),
            started_at_ns: to_ns(SystemTime::now()),
        };
        write_json(&dir.join("started.json"), &started).map_err(engine)?;
        let go = match stdin.as_mut() {
            Some(stdin) => stdin.write_all(b"go\n").await,
            None => Err(std::io::Error::other("no stdin")),
        };
        drop(stdin);
        if let Err(e) = go {
            // The shim died before it read: it runs nothing, and inspect
            // reports it as exited.
            tracing::warn!(container = %record.name, pid, error = %e, "the container's shim did not take its start signal");
        }
        Ok(())
    }
}

/// NAME and TAG of an image reference (`latest` when none; a digest
/// `@sha256:...` is a tag).
fn split_image(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':')
        && let Some((name, tag)) = image.rsplit_once(':')
    {
        return (name, tag);
    }
    (image, "latest")
}

fn not_found(id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        what: format!("container {id}"),
    }
}

/// Where `name` is on the host's PATH (the agent's, then [`HOST_PATH`]).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(HOST_PATH.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (the effective uid in
/// /proc/self/status, as `geteuid` would say without `unsafe`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The state letter and start time (clock ticks after boot) of `pid`, from
/// `/proc/<pid>/stat`. The command name in parentheses may hold spaces and
/// parentheses: fields are counted from the last `)`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process `started` recorded still runs: same boot, same pid
/// with the same start time, not a zombie. The sandbox (pid 0) runs until
/// the machine reboots.
fn is_alive(started: &Started) -> bool {
    if started.boot_id != boot_id() {
        return false;
    }
    if started.pid == 0 {
        return true;
    }
    matches!(proc_stat(started.pid), Some((state, start))
        if start == started.start_ticks && state != 'Z' && state != 'X')
}

fn to_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Writes `bytes` to `path` whole: a temporary file in the same directory
/// (mode 0600), then a rename over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, &bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn read_record(dir: &Path) -> Option<Record> {
    read_json(&dir.join("config.json"))
}

fn read_started(dir: &Path) -> Option<Started> {
    read_json(&dir.join("started.json"))
}

/// The exit code and when it was written, once the container has exited.
fn read_exit(dir: &Path) -> Option<(i64, SystemTime)> {
    let path = dir.join("exit_code");
    let code = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
    let at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    Some((code, at))
}

/// Records `code` as the exit code unless one is recorded already (the
/// shim's own wins): a hard link never replaces an existing file.
fn record_exit(dir: &Path, code: i64) {
    let path = dir.join("exit_code");
    if path.exists() {
        return;
    }
    let tmp = dir.join(format!("exit_code.agent-{:08x}", rand::random::<u32>()));
    if std::fs::write(&tmp, format!("{code}\n")).is_ok() {
        let _ = std::fs::hard_link(&tmp, &path);
    }
    let _ = std::fs::remove_file(&tmp);
}

/// The container's state from its directory. A process found dead without
/// an exit code is recorded as killed (137) on the way.
fn run_state(dir: &Path) -> ContainerRunState {
    let Some(started) = read_started(dir) else {
        return ContainerRunState::Created;
    };
    let started_at = from_ns(started.started_at_ns);
    let exited = |(exit_code, finished_at): (i64, SystemTime)| ContainerRunState::Exited {
        exit_code,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
        started_at: Some(started_at),
        finished_at: Some(finished_at),
    };
    if let Some(exit) = read_exit(dir) {
        return exited(exit);
    }
    if is_alive(&started) {
        return ContainerRunState::Running { started_at };
    }
    // The shim writes the exit code before it dies: look once more, then
    // record the death of a process that could not write it.
    if let Some(exit) = read_exit(dir) {
        return exited(exit);
    }
    record_exit(dir, KILLED);
    exited(read_exit(dir).unwrap_or((KILLED, SystemTime::now())))
}

/// Sends `signal` ("TERM", "KILL") to `target` (a pid, or `-pgid` for a
/// process group) with kill(1).
async fn send_signal(signal: &str, target: &str) {
    let kill = find_tool("kill").unwrap_or_else(|| "kill".into());
    if let Err(e) = tokio::process::Command::new(kill)
        .args(["-s", signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
    {
        tracing::warn!(signal, target, error = %e, "kill(1) could not run");
    }
}

/// SIGKILLs the process group of `started` (if it is still the container's)
/// and waits, up to [`KILL_WAIT`], for its leader to be gone.
async fn kill_group(started: &Started) {
    if started.pid == 0 {
        return;
    }
    // Sent again while the leader lives: a `kill` that could not even be
    // spawned (a loaded machine) must not leave the group running.
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    while is_alive(started) && tokio::time::Instant::now() < deadline {
        send_signal("KILL", &format!("-{}", started.pid)).await;
        tokio::time::sleep(POLL).await;
    }
}

/// Where the last `n` lines of a file of `len` bytes start (a final newline
/// ends the last line; it does not start an empty one).
fn tail_offset(file: &mut std::fs::File, len: u64, n: u64) -> std::io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; 8192];
    let mut end = len;
    let mut newlines = 0;
    while end > 0 {
        let step = end.min(buf.len() as u64);
        let start = end - step;
        file.seek(SeekFrom::Start(start))?;
        let chunk = &mut buf[..step as usize];
        file.read_exact(chunk)?;
        for (i, byte) in chunk.iter().enumerate().rev() {
            let at = start + i as u64;
            if *byte == b'\n' && at + 1 != len {
                newlines += 1;
                if newlines == n {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Reads up to 64 KiB of `path` from `pos`.
fn read_chunk(path: &Path, pos: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::new();
    f.take(64 * 1024).read_to_end(&mut buf)?;
    Ok(buf)
}

/// How `logs` goes on: the file, where it is, whether to follow.
struct LogCursor {
    dir: PathBuf,
    pos: u64,
    follow: bool,
    /// The container was seen exited: one last read, then the end.
    last_read: bool,
}

impl LogCursor {
    async fn next(mut self) -> Option<(Result<bytes::Bytes>, LogCursor)> {
        loop {
            match read_chunk(&self.dir.join("log"), self.pos) {
                Ok(chunk) if !chunk.is_empty() => {
                    self.pos += chunk.len() as u64;
                    return Some((Ok(chunk.into()), self));
                }
                Ok(_) => {}
                // Removed meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => {
                    let error = RuntimeError::Engine {
                        message: format!("reading the log in {}: {e}", self.dir.display()),
                    };
                    self.follow = false;
                    self.last_read = true;
                    return Some((Err(error), self));
                }
            }
            if !self.follow || self.last_read {
                return None;
            }
            if !matches!(
                run_state(&self.dir),
                ContainerRunState::Running { .. } | ContainerRunState::Created
            ) {
                self.last_read = true;
                continue;
            }
            tokio::time::sleep(POLL * 4).await;
        }
    }
}

#[async_trait]
impl ContainerRuntime for ProcessRuntime {
    async fn version(&self) -> Result<String> {
        Ok(format!("process://{}", env!("CARGO_PKG_VERSION")))
    }

    /// Nothing to set up: containers run on the host's network.
    async fn ensure_network(
        &self,
        _name: &str,
        _subnet: ipnet::Ipv4Net,
        _gateway: Ipv4Addr,
    ) -> Result<()> {
        Ok(())
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        if image == SANDBOX_IMAGE {
            return Ok(true);
        }
        Ok(self.image_dir(image).is_some_and(|d| d.is_dir()))
    }

    /// The sandbox has no image here.
    async fn ensure_sandbox_image(&self) -> Result<()> {
        Ok(())
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String> {
        let sandbox = config.image == SANDBOX_IMAGE;
        let mut argv = config.command.clone();
        argv.extend(config.args.iter().cloned());
        let image_dir = if sandbox {
            None
        } else {
            let dir = self.image_dir(&config.image);
            match dir.as_ref().filter(|d| d.is_dir()) {
                Some(dir) => Some(dir.clone()),
                None => {
                    let where_ = dir.map_or_else(
                        || "an image directory, which this reference cannot name".to_string(),
                        |d| format!("the directory {}", d.display()),
                    );
                    return Err(RuntimeError::ImageNotPresent {
                        image: format!("{} (the process runtime looks for {where_})", config.image),
                    });
                }
            }
        };
        if !sandbox && argv.is_empty() {
            return Err(RuntimeError::Engine {
                message: format!(
                    "container {}: the process runtime needs the container's command (or args): \
                     an image directory has no entrypoint",
                    config.name
                ),
            });
        }
        if !config.mounts.is_empty() && !is_root() {
            return Err(RuntimeError::Engine {
                message: format!(
                    "container {} has volume mounts, which the process runtime makes in a mount \
                     namespace of its own and so only as root; run the agent as root or drop the \
                     pod's volumes",
                    config.name
                ),
            });
        }
        if config.cpu_millis > 0 || config.memory_bytes > 0 {
            tracing::debug!(container = %config.name, "the process runtime does not enforce cpu or memory limits");
        }
        let path = config
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| match &image_dir {
                Some(d) => format!("{}:{HOST_PATH}", d.join("bin").display()),
                None => HOST_PATH.to_string(),
            });
        let working_dir = if !config.working_dir.is_empty() {
            config.working_dir.clone()
        } else {
            image_dir
                .as_ref()
                .map_or_else(|| "/".to_string(), |d| d.display().to_string())
        };
        let id = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let record = Record {
            id: id.clone(),
            name: config.name.clone(),
            image: config.image.clone(),
            image_id: image_dir
                .as_ref()
                .map_or_else(|| "none".to_string(), |d| format!("dir:{}", d.display())),
            sandbox,
            argv,
            env: config
                .env
                .iter()
                .filter(|(k, _)| k != "PATH")
                .cloned()
                .collect(),
            path,
            working_dir,
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    host_path: m.host_path.clone(),
                    container_path: m.container_path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            labels: config.labels.clone(),
            network: match &config.network {
                NetworkAttachment::PodNetwork { network } => format!("pod:{network}"),
                NetworkAttachment::Container { id } => format!("container:{id}"),
                NetworkAttachment::None => "none".into(),
            },
            created_at_ns: to_ns(SystemTime::now()),
        };

        let _guard = self.lock.lock().await;
        // Names are unique on the node, as Docker keeps them.
        let containers = self.root.join("containers");
        let entries = std::fs::read_dir(&containers).map_err(|e| RuntimeError::Engine {
            message: format!("listing {}: {e}", containers.display()),
        })?;
        for entry in entries.flatten() {
            if let Some(other) = read_record(&entry.path())
                && other.name == config.name
            {
                return Err(RuntimeError::Engine {
                    message: format!(
                        "creating container {}: the name is already in use by container {}",
                        config.name, other.id
                    ),
                });
            }
        }
        // Made under a temporary name and renamed into place: a container
        // directory always has its config.
        let tmp = containers.join(format!(".create-{id}"));
        let made = (|| {
            std::fs::create_dir(&tmp)?;
            write_json(&tmp.join("config.json"), &record)?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(tmp.join("log"))?;
            std::fs::rename(&tmp, containers.join(&id))
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(RuntimeError::Engine {
                message: format!("creating container {}: {e}", config.name),
            });
        }
        Ok(id)
    }

    /// Starts the container's process; starting a running one does nothing,
    /// starting an exited one runs its command again (the log goes on).
    async fn start(&self, id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let (dir, record) = self.load(id)?;
        match run_state(&dir) {
            ContainerRunState::Running { .. } => return Ok(()),
            ContainerRunState::Exited { .. } => {
                let _ = std::fs::remove_file(dir.join("exit_code"));
                let _ = std::fs::remove_file(dir.join("started.json"));
            }
            ContainerRunState::Created => {}
        }
        if record.sandbox {
            let started = Started {
                pid: 0,
                start_ticks: 0,
                boot_id: boot_id(),
                started_at_ns: to_ns(SystemTime::now()),
            };
            return write_json(&dir.join("started.json"), &started).map_err(|e| {
                RuntimeError::Engine {
                    message: format!("starting container {}: {e}", record.name),
                }
            });
        }
        self.spawn(&dir, &record).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let (dir, record) = self.load(id)?;
        if !matches!(run_state(&dir), ContainerRunState::Running { .. }) {
            return Ok(());
        }
        let Some(started) = read_started(&dir) else {
            return Ok(());
        };
        if record.sandbox {
            record_exit(&dir, 0);
            return Ok(());
        }
        // SIGTERM to the shim, which passes it to the command.
        send_signal("TERM", &started.pid.to_string()).await;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if read_exit(&dir).is_some() {
                return Ok(());
            }
            if !is_alive(&started) || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        // The grace period is over (or the shim died without a word): the
        // whole process group goes.
        kill_group(&started).await;
        record_exit(&dir, KILLED);
        Ok(())
    }

    /// Kills what still runs of the container and deletes its directory
    /// (and so its log).
    async fn remove(&self, id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let dir = match self.container_dir(id) {
            Ok(dir) => dir,
            Err(_) => return Ok(()),
        };
        if !dir.exists() {
            return Ok(());
        }
        if let Some(started) = read_started(&dir) {
            kill_group(&started).await;
        }
        // Rename first, so the container vanishes from list at once.
        let doomed = self
            .root
            .join("containers")
            .join(format!(".create-removed-{id}"));
        let target = match std::fs::rename(&dir, &doomed) {
            Ok(()) => doomed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => dir,
        };
        match std::fs::remove_dir_all(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Engine {
                message: format!("removing container {id} ({}): {e}", target.display()),
            }),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        let (dir, record) = self.load(id)?;
        Ok(self.info(&dir, record))
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>> {
        let containers = self.root.join("containers");
        let entries = std::fs::read_dir(&containers).map_err(|e| RuntimeError::Engine {
            message: format!("listing {}: {e}", containers.display()),
        })?;
        let mut infos = Vec::new();
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let dir = entry.path();
            // Removed meanwhile, or not ours.
            let Some(record) = read_record(&dir) else {
                continue;
            };
            if labels
                .iter()
                .all(|(k, v)| record.labels.get(*k).map(String::as_str) == Some(*v))
            {
                infos.push(self.info(&dir, record));
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    /// The log file; `tail` counts lines from its end; `follow` streams
    /// what is appended until the container has exited. `timestamps` is
    /// not supported: lines come without a prefix.
    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes>>> {
        let (dir, _) = self.load(id)?;
        let log = dir.join("log");
        let pos = match options.tail {
            None => 0,
            Some(n) => {
                let offset = std::fs::File::open(&log).and_then(|mut f| {
                    let len = f.metadata()?.len();
                    tail_offset(&mut f, len, n)
                });
                match offset {
                    Ok(offset) => offset,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => {
                        return Err(RuntimeError::Engine {
                            message: format!("reading the logs of container {id}: {e}"),
                        });
                    }
                }
            }
        };
        let cursor = LogCursor {
            dir,
            pos,
            follow: options.follow,
            last_read: false,
        };
        Ok(futures::stream::unfold(cursor, LogCursor::next).boxed())
    }

    /// Runs `command` on the host with the container's env and working
    /// directory, in its mount namespace when it has mounts (`nsenter`).
    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        let (dir, record) = self.load(id)?;
        let engine = |message: String| RuntimeError::Engine { message };
        let Some(program) = command.first() else {
            return Err(engine(format!("exec in container {id}: no command given")));
        };
        if record.sandbox {
            return Err(engine(format!(
                "container {id} is a pod sandbox, which has no process to run commands beside"
            )));
        }
        let started = match (run_state(&dir), read_started(&dir)) {
            (ContainerRunState::Running { .. }, Some(started)) => started,
            _ => return Err(engine(format!("container {id} is not running"))),
        };
        let mut cmd = if record.mounts.is_empty() {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(&command[1..]).current_dir(&record.working_dir);
            cmd
        } else {
            let nsenter = find_tool("nsenter").ok_or_else(|| {
                engine(format!(
                    "exec in container {id} needs nsenter(1) (util-linux) to enter its mount \
                     namespace"
                ))
            })?;
            let mut cmd = tokio::process::Command::new(nsenter);
            cmd.args(["--target", &started.pid.to_string(), "--mount", "--"])
                .args([SH, "-c", r#"cd "$1" || exit 126; shift; exec "$@""#, "sh"])
                .arg(&record.working_dir)
                .args(command);
            cmd
        };
        cmd.env_clear()
            .envs(record.env.iter().map(|(k, v)| (k, v)))
            .env("PATH", &record.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if !record.env.iter().any(|(k, _)| k == "HOME") {
            cmd.env(
                "HOME",
                std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
            );
        }
        let child = cmd
            .spawn()
            .map_err(|e| engine(format!("exec {program:?} in container {id}: {e}")))?;
        let pid = child.id();
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(ExecOutput {
                exit_code: out
                    .status
                    .code()
                    .map(i64::from)
                    .or_else(|| out.status.signal().map(|s| 128 + i64::from(s)))
                    .unwrap_or(-1),
                stdout: out.stdout,
                stderr: out.stderr,
            }),
            Ok(Err(e)) => Err(engine(format!("exec {program:?} in container {id}: {e}"))),
            Err(_) => {
                // Its own process group: whatever it started goes too.
                if let Some(pid) = pid {
                    send_signal("KILL", &format!("-{pid}")).await;
                }
                Err(engine(format!(
                    "exec in container {id} timed out after {timeout:?}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Mount;

    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

    /// A runtime in a temporary directory with the image `demo` present.
    fn runtime() -> (tempfile::TempDir, ProcessRuntime) {
        let dir = tempfile::tempdir().unwrap();
        let rt = ProcessRuntime::new(dir.path().join("state"), IP).unwrap();
        std::fs::create_dir_all(rt.image_dir("demo").unwrap().join("bin")).unwrap();
        (dir, rt)
    }

    fn config(name: &str, script: &str) -> ContainerConfig {
        ContainerConfig {
            name: name.into(),
            image: "demo".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            args: vec![],
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: String::new(),
            mounts: vec![],
            labels: BTreeMap::from([("app".into(), name.into())]),
            network: NetworkAttachment::Container { id: "x".into() },
            hostname: String::new(),
            dns_servers: vec![],
            dns_search: vec![],
            cpu_millis: 0,
            memory_bytes: 0,
        }
    }

    async fn run(rt: &ProcessRuntime, config: &ContainerConfig) -> String {
        let id = rt.create(config).await.unwrap();
        rt.start(&id).await.unwrap();
        id
    }

    /// Polls `check` every 50 ms for up to 10 s.
    async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn log_text(rt: &ProcessRuntime, id: &str, options: LogOptions) -> String {
        let chunks: Vec<_> = rt.logs(id, options).await.unwrap().collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    async fn exited(rt: &ProcessRuntime, id: &str) -> (i64, String) {
        eventually("the container to exit", async || {
            match rt.inspect(id).await.unwrap().state {
                ContainerRunState::Exited {
                    exit_code, reason, ..
                } => Some((exit_code, reason)),
                _ => None,
            }
        })
        .await
    }

    fn running(pid: u32) -> bool {
        proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
    }

    #[tokio::test]
    async fn a_started_container_runs_logs_answers_exec_and_stops_on_sigterm() {
        let (_tmp, rt) = runtime();
        let id = run(&rt, &config("web", "echo hi; echo $GREETING; sleep 30")).await;
        let info = rt.inspect(&id).await.unwrap();
        assert!(
            matches!(info.state, ContainerRunState::Running { .. }),
            "{info:?}"
        );
        assert_eq!(info.name, "web");
        assert!(info.image_id.starts_with("dir:"), "{}", info.image_id);
        assert_eq!(info.ip, None, "only the sandbox has the pod's IP");
        let pid = rt.pid(&id).expect("a pid while running");
        assert!(running(pid));

        let text = eventually("the output in the log", async || {
            let text = log_text(&rt, &id, LogOptions::default()).await;
            text.contains("hello").then_some(text)
        })
        .await;
        assert_eq!(text, "hi\nhello\n");

        let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let out = rt
            .exec(
                &id,
                &sh("echo out $GREETING; pwd; echo err >&2; exit 3"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(out.exit_code, 3);
        let image = rt.image_dir("demo").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("out hello\n{}\n", image.display()),
            "the container's env and working directory (the image's)"
        );
        assert_eq!(out.stderr, b"err\n");
        let timed_out = rt
            .exec(&id, &sh("sleep 20"), Duration::from_millis(300))
            .await;
        assert!(
            matches!(&timed_out, Err(RuntimeError::Engine { message }) if message.contains("timed out")),
            "{timed_out:?}"
        );

        let asked = std::time::Instant::now();
        rt.stop(&id, Duration::from_secs(20)).await.unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "SIGTERM ended it, not the grace period"
        );
        match rt.inspect(&id).await.unwrap().state {
            ContainerRunState::Exited {
                exit_code,
                reason,
                started_at,
                finished_at,
            } => {
                assert_eq!((exit_code, reason.as_str()), (143, "Error"));
                assert!(started_at.unwrap() <= finished_at.unwrap());
            }
            other => panic!("not exited: {other:?}"),
        }
        assert_eq!(rt.pid(&id), None);
        eventually("the shim to be gone", async || {
            (!running(pid)).then_some(())
        })
        .await;
        rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn a_container_that_exits_reports_its_code_and_reason() {
        let (_tmp, rt) = runtime();
        let ok = run(&rt, &config("ok", "echo done")).await;
        let bad = run(&rt, &config("bad", "exit 3")).await;
        assert_eq!(exited(&rt, &ok).await, (0, "Completed".into()));
        assert_eq!(exited(&rt, &bad).await, (3, "Error".into()));
        assert_eq!(log_text(&rt, &ok, LogOptions::default()).await, "done\n");
        // Started again, it runs its command again.
        rt.start(&ok).await.unwrap();
        assert_eq!(exited(&rt, &ok).await, (0, "Completed".into()));
        assert_eq!(
            log_text(&rt, &ok, LogOptions::default()).await,
            "done\ndone\n"
        );
    }

    #[tokio::test]
    async fn stop_kills_the_process_group_after_the_grace_period() {
        let (_tmp, rt) = runtime();
        // Ignores SIGTERM; its sleeps are in its process group.
        let id = run(
            &rt,
            &config(
                "stubborn",
                "trap '' TERM; echo trapped; while :; do sleep 0.1; done",
            ),
        )
        .await;
        // A SIGTERM before the trap is set would end it at once.
        eventually("the trap set", async || {
            log_text(&rt, &id, LogOptions::default())
                .await
                .contains("trapped")
                .then_some(())
        })
        .await;
        let pid = rt.pid(&id).unwrap();
        let asked = std::time::Instant::now();
        rt.stop(&id, Duration::from_millis(500)).await.unwrap();
        assert!(asked.elapsed() >= Duration::from_millis(500));
        assert_eq!(exited(&rt, &id).await, (137, "Error".into()));
        let group_left = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.get(s.rfind(')')? + 1..)?.to_string();
                        let fields: Vec<&str> = rest.split_whitespace().collect();
                        Some(fields.get(2)? == &pid.to_string() && fields[0] != "Z")
                    })
                    .unwrap_or(false)
            })
            .count();
        assert_eq!(group_left, 0, "nothing of the process group is left");
    }

    #[tokio::test]
    async fn a_process_that_died_without_its_shim_noticing_is_reported_killed() {
        let (_tmp, rt) = runtime();
        let id = run(&rt, &config("victim", "sleep 30")).await;
        let pid = rt.pid(&id).unwrap();
        send_signal("KILL", &format!("-{pid}")).await;
        assert_eq!(exited(&rt, &id).await, (137, "Error".into()));
        // It stays so (recorded, not recomputed).
        assert!(
            rt.root()
                .join("containers")
                .join(&id)
                .join("exit_code")
                .exists()
        );
    }

    #[tokio::test]
    async fn a_reused_pid_or_another_boot_is_not_the_container() {
        let me = std::process::id();
        let (_, ticks) = proc_stat(me).unwrap();
        let started = |start_ticks, boot_id: String| Started {
            pid: me,
            start_ticks,
            boot_id,
            started_at_ns: 0,
        };
        assert!(is_alive(&started(ticks, boot_id())));
        assert!(
            !is_alive(&started(ticks + 1, boot_id())),
            "another start time"
        );
        assert!(!is_alive(&started(ticks, "another-boot".into())));
    }

    #[tokio::test]
    async fn a_new_runtime_over_the_same_root_adopts_what_runs() {
        let (tmp, rt) = runtime();
        let id = run(&rt, &config("kept", "sleep 30")).await;
        let pid = rt.pid(&id).unwrap();
        drop(rt);

        // The agent restarted: a new runtime over the same directory.
        let again = ProcessRuntime::new(tmp.path().join("state"), IP).unwrap();
        let listed = again.list(&[("app", "kept")]).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert!(matches!(listed[0].state, ContainerRunState::Running { .. }));
        assert_eq!(again.pid(&id), Some(pid), "the same process, not a new one");
        again.start(&id).await.unwrap();
        assert_eq!(
            again.pid(&id),
            Some(pid),
            "starting a running one does nothing"
        );

        again.remove(&id).await.unwrap();
        assert!(!tmp.path().join("state/containers").join(&id).exists());
        assert!(matches!(
            again.inspect(&id).await,
            Err(RuntimeError::NotFound { .. })
        ));
        assert!(again.list(&[]).await.unwrap().is_empty());
        eventually("the process to be gone", async || {
            (!running(pid)).then_some(())
        })
        .await;
        again.remove(&id).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_image_or_command_is_refused() {
        let (_tmp, rt) = runtime();
        let mut missing = config("m", "true");
        missing.image = "team/app:v2".into();
        assert!(!rt.image_present("team/app:v2").await.unwrap());
        match rt.create(&missing).await {
            Err(RuntimeError::ImageNotPresent { image }) => {
                assert!(image.contains("images/team_app/v2"), "{image}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::create_dir_all(rt.root().join("images/team_app/v2")).unwrap();
        assert!(rt.image_present("team/app:v2").await.unwrap());
        assert!(rt.image_present(SANDBOX_IMAGE).await.unwrap());

        let mut bare = config("bare", "");
        bare.command.clear();
        match rt.create(&bare).await {
            Err(RuntimeError::Engine { message }) => {
                assert!(
                    message.contains("bare") && message.contains("command"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Args alone are the command line.
        bare.args = vec!["true".into()];
        let id = rt.create(&bare).await.unwrap();
        let again = rt.create(&bare).await;
        assert!(
            matches!(&again, Err(RuntimeError::Engine { message }) if message.contains("already in use")),
            "{again:?}"
        );
        rt.start(&id).await.unwrap();
        assert_eq!(exited(&rt, &id).await, (0, "Completed".into()));
        assert_eq!(rt.image_dir(".."), None);
        assert_eq!(
            rt.image_dir("localhost:5000/app").unwrap(),
            rt.root().join("images/localhost_5000_app/latest")
        );
    }

    #[tokio::test]
    async fn a_read_only_mount_is_visible_inside_the_process_only() {
        if !is_root() {
            eprintln!("skipped: bind mounts need root");
            return;
        }
        let (tmp, rt) = runtime();
        let host = tmp.path().join("host");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("setting"), "blue\n").unwrap();
        let inside = tmp.path().join("inside/etc/cfg");
        let mut c = config(
            "mounted",
            &format!(
                "cat {0}/setting; touch {0}/new 2>/dev/null && echo writable || echo read-only; sleep 30",
                inside.display()
            ),
        );
        c.mounts = vec![Mount {
            host_path: host.display().to_string(),
            container_path: inside.display().to_string(),
            read_only: true,
        }];
        let id = run(&rt, &c).await;
        let text = eventually("the mount's content in the log", async || {
            let text = log_text(&rt, &id, LogOptions::default()).await;
            text.contains("read").then_some(text)
        })
        .await;
        assert_eq!(text, "blue\nread-only\n");
        assert!(
            !inside.join("setting").exists(),
            "the mount is the container's own, not the host's"
        );
        let out = rt
            .exec(
                &id,
                &["cat".into(), inside.join("setting").display().to_string()],
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!((out.exit_code, out.stdout), (0, b"blue\n".to_vec()));
        rt.remove(&id).await.unwrap();
    }

    #[tokio::test]
    async fn the_sandbox_is_a_record_with_the_nodes_ip_and_list_filters_by_labels() {
        let (_tmp, rt) = runtime();
        let sandbox = |name: &str, pod: &str| ContainerConfig {
            image: SANDBOX_IMAGE.into(),
            command: vec![],
            network: NetworkAttachment::PodNetwork {
                network: "rafter-n1".into(),
            },
            labels: BTreeMap::from([("node".into(), "n1".into()), ("pod".into(), pod.into())]),
            ..config(name, "")
        };
        let a = run(&rt, &sandbox("a", "p1")).await;
        let b = run(&rt, &sandbox("b", "p2")).await;
        let info = rt.inspect(&a).await.unwrap();
        assert!(matches!(info.state, ContainerRunState::Running { .. }));
        assert_eq!(info.ip, Some(IP), "the pod's IP is the node's");
        assert_eq!(rt.pid(&a), None, "no process");

        let ids = |infos: Vec<ContainerInfo>| infos.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(
            ids(rt.list(&[("pod", "p1")]).await.unwrap()),
            vec![a.clone()]
        );
        assert_eq!(
            ids(rt.list(&[("node", "n1"), ("pod", "p2")]).await.unwrap()),
            vec![b.clone()]
        );
        assert_eq!(
            ids(rt.list(&[("node", "n1")]).await.unwrap()),
            vec![a.clone(), b.clone()]
        );
        assert!(rt.list(&[("node", "n2")]).await.unwrap().is_empty());

        rt.stop(&a, Duration::from_secs(30)).await.unwrap();
        assert_eq!(exited(&rt, &a).await, (0, "Completed".into()));
        assert_eq!(rt.inspect(&a).await.unwrap().ip, None);
    }

    #[tokio::test]
    async fn logs_tail_and_follow_until_the_container_exits() {
        let (_tmp, rt) = runtime();
        let id = run(
            &rt,
            &config("talker", "echo one; echo two; sleep 1; echo three"),
        )
        .await;
        let followed = tokio::time::timeout(
            Duration::from_secs(10),
            log_text(
                &rt,
                &id,
                LogOptions {
                    follow: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("following ends when the container exits");
        assert_eq!(followed, "one\ntwo\nthree\n");
        let tail = |n| LogOptions {
            tail: Some(n),
            ..Default::default()
        };
        assert_eq!(log_text(&rt, &id, tail(2)).await, "two\nthree\n");
        assert_eq!(log_text(&rt, &id, tail(0)).await, "");
        assert_eq!(log_text(&rt, &id, tail(9)).await, "one\ntwo\nthree\n");
    }

    #[test]
    fn tail_offsets_count_lines_from_the_end() {
        let mut f = tempfile::tempfile().unwrap();
        let text = b"a\nbb\nccc\n";
        f.write_all(text).unwrap();
        let len = text.len() as u64;
        assert_eq!(tail_offset(&mut f, len, 1).unwrap(), 5);
        assert_eq!(tail_offset(&mut f, len, 2).unwrap(), 2);
        assert_eq!(tail_offset(&mut f, len, 3).unwrap(), 0);
        assert_eq!(tail_offset(&mut f, len, 0).unwrap(), len);
        // An unfinished last line counts as a line.
        f.write_all(b"dd").unwrap();
        assert_eq!(tail_offset(&mut f, len + 2, 1).unwrap(), len);
    }

    #[test]
    fn image_references_map_to_directories() {
        assert_eq!(split_image("demo"), ("demo", "latest"));
        assert_eq!(split_image("rafter/demo:1.2"), ("rafter/demo", "1.2"));
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(split_image("app@sha256:ab"), ("app", "sha256:ab"));
    }
}
