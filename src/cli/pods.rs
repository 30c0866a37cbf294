//! `rafter logs POD` and `rafter exec POD [-i] [-t] -- CMD`, as kubectl
//! has them, through any master to the pod's node agent.
//!
//! `exec` without `-i`/`-t` is one call (`Pods.Exec`) that returns the
//! command's output at its end. With them it is a bidirectional stream
//! (`Pods.ExecStream`): our stdin goes to the command as we read it, its
//! output comes back as it writes it, and with `-t` it runs on a remote
//! pseudo-terminal that our terminal, in raw mode, drives.

use std::io::{Read, Write};

use anyhow::{Context, anyhow, bail};
use rafter_proto::api::exec_input::Input;
use rafter_proto::api::exec_output_frame::Output;
use rafter_proto::api::{
    ExecInput, ExecRequest, ExecStart, LogsRequest, StdinClosed, TerminalSize,
};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::GlobalArgs;
use super::objects::{NamespaceArgs, namespace, server_error};
use super::terminal::{self, RawMode};

/// kubectl's words when `-t` is asked for but stdin is no terminal.
const NO_TTY_WARNING: &str =
    "Unable to use a TTY - input is not a terminal or the right kind of file";

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// The log of the previous, exited container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Prefix each line with its time.
    #[arg(long)]
    pub timestamps: bool,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass stdin to the command (its EOF closes the command's stdin); the
    /// output is printed as it comes.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Run the command on a terminal (stderr then merges into stdout). Our
    /// stdin must be a terminal, which is put in raw mode meanwhile and
    /// whose size follows along; else a warning, and no terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Give up after this many seconds (not with -i or -t, which run until
    /// the command exits).
    #[arg(long, default_value_t = 60)]
    pub timeout: i32,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn logs(global: &GlobalArgs, a: LogsArgs) -> anyhow::Result<()> {
    let client = global.client().await?;
    let mut stream = client
        .pod_logs(LogsRequest {
            namespace: namespace(&a.ns)?,
            pod: a.pod,
            container: a.container.unwrap_or_default(),
            follow: a.follow,
            tail_lines: a.tail,
            previous: a.previous,
            timestamps: a.timestamps,
        })
        .await
        .map_err(server_error)?;
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}

/// Runs the command; returns its exit code for the process to exit with.
pub async fn exec(global: &GlobalArgs, a: ExecArgs) -> anyhow::Result<i32> {
    if a.command.is_empty() {
        bail!("give the command after --: rafter exec POD -- COMMAND [ARGS...]");
    }
    let mode = Mode::of(a.stdin, a.tty, terminal::stdin_is_terminal());
    if mode.warn_no_tty {
        eprintln!("{NO_TTY_WARNING}");
    }
    if mode.stdin || mode.tty {
        let start = ExecStart {
            namespace: namespace(&a.ns)?,
            pod: a.pod,
            container: a.container.unwrap_or_default(),
            command: a.command,
            stdin: mode.stdin,
            tty: mode.tty,
            terminal_size: if mode.tty { terminal_size() } else { None },
        };
        return exec_stream(global, start).await;
    }
    let client = global.client().await?;
    let resp = client
        .pod_exec(ExecRequest {
            namespace: namespace(&a.ns)?,
            pod: a.pod,
            container: a.container.unwrap_or_default(),
            command: a.command,
            timeout_seconds: a.timeout,
        })
        .await
        .map_err(server_error)?;
    std::io::stdout().write_all(&resp.stdout)?;
    std::io::stderr().write_all(&resp.stderr)?;
    Ok(resp.exit_code)
}

/// How `exec` attaches, from `-i`, `-t` and whether stdin is a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode {
    stdin: bool,
    tty: bool,
    /// `-t` without a terminal: say so (as kubectl does) and go on without.
    warn_no_tty: bool,
}

impl Mode {
    fn of(stdin: bool, tty: bool, stdin_is_terminal: bool) -> Mode {
        Mode {
            stdin,
            tty: tty && stdin_is_terminal,
            warn_no_tty: tty && !stdin_is_terminal,
        }
    }

    /// Our terminal goes raw only when it types into the remote one;
    /// without `-i` it keeps its own ^C.
    fn raw(self) -> bool {
        self.stdin && self.tty
    }
}

/// Interactive exec: returns the command's exit code, or 128 + the number
/// of the signal that stopped us while our terminal was raw.
async fn exec_stream(global: &GlobalArgs, start: ExecStart) -> anyhow::Result<i32> {
    let mode = Mode {
        stdin: start.stdin,
        tty: start.tty,
        warn_no_tty: false,
    };
    let client = global.client().await?;
    let (tx, rx) = mpsc::channel::<ExecInput>(16);
    let input = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    let mut frames = client
        .pod_exec_stream(start, input)
        .await
        .map_err(server_error)?;
    // Raw only once the command runs: an error before that prints on the
    // terminal as the user left it.
    let raw = if mode.raw() {
        Some(RawMode::enable().context("putting the terminal in raw mode")?)
    } else {
        None
    };
    // Signals (from elsewhere: raw mode turns ^C into a byte for the
    // command) must not leave the terminal raw.
    let mut interrupts = if raw.is_some() {
        Some(Interrupts::new()?)
    } else {
        None
    };
    if mode.stdin {
        read_stdin(tx.clone());
    }
    let resizes = mode.tty.then(|| tokio::spawn(forward_resizes(tx.clone())));
    // The input stream now lives as long as its readers do.
    drop(tx);
    let result = async {
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        loop {
            let frame = tokio::select! {
                frame = frames.message() => frame.map_err(|s| anyhow!("exec: {}", s.message()))?,
                signo = interrupted(&mut interrupts) => return Ok(128 + signo),
            };
            let Some(frame) = frame else {
                bail!("the exec stream ended before the command's exit code came: the master or the node agent went away");
            };
            match frame.output {
                Some(Output::Stdout(data)) => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                Some(Output::Stderr(data)) => {
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                }
                Some(Output::ExitCode(code)) => return Ok(code),
                None => {}
            }
        }
    }
    .await;
    if let Some(task) = resizes {
        task.abort();
    }
    // Before the caller prints any error.
    drop(raw);
    result
}

/// The terminal's size for the wire.
fn terminal_size() -> Option<TerminalSize> {
    terminal::size().map(|(rows, cols)| TerminalSize {
        rows: rows.into(),
        cols: cols.into(),
    })
}

/// Copies stdin to `tx` as it is read, then says it closed. On a thread of
/// its own, not a tokio task: a read of stdin cannot be cancelled, and the
/// runtime would wait for it at exit.
fn read_stdin(tx: mpsc::Sender<ExecInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let input = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => Input::Stdin(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if tx.blocking_send(ExecInput { input: Some(input) }).is_err() {
                return;
            }
        }
        let _ = tx.blocking_send(ExecInput {
            input: Some(Input::StdinClosed(StdinClosed {})),
        });
    });
}

/// Sends the terminal's size each time it changes (SIGWINCH).
async fn forward_resizes(tx: mpsc::Sender<ExecInput>) {
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        if let Some(size) = terminal_size()
            && tx
                .send(ExecInput {
                    input: Some(Input::Resize(size)),
                })
                .await
                .is_err()
        {
            return;
        }
    }
}

/// The signals that end `rafter exec` while the terminal is raw.
struct Interrupts {
    hangup: Signal,
    interrupt: Signal,
    quit: Signal,
    terminate: Signal,
}

impl Interrupts {
    fn new() -> anyhow::Result<Interrupts> {
        let on = |kind| signal(kind).context("handling signals");
        Ok(Interrupts {
            hangup: on(SignalKind::hangup())?,
            interrupt: on(SignalKind::interrupt())?,
            quit: on(SignalKind::quit())?,
            terminate: on(SignalKind::terminate())?,
        })
    }

    /// The number of the next signal.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.hangup.recv() => libc::SIGHUP,
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.quit.recv() => libc::SIGQUIT,
            _ = self.terminate.recv() => libc::SIGTERM,
        }
    }
}

/// The next signal, or never without handlers.
async fn interrupted(interrupts: &mut Option<Interrupts>) -> i32 {
    match interrupts {
        Some(i) => i.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_needs_a_terminal_and_says_so_without_one() {
        assert_eq!(
            Mode::of(true, true, true),
            Mode {
                stdin: true,
                tty: true,
                warn_no_tty: false
            }
        );
        assert_eq!(
            Mode::of(true, true, false),
            Mode {
                stdin: true,
                tty: false,
                warn_no_tty: true
            }
        );
        assert_eq!(
            Mode::of(false, true, false),
            Mode {
                stdin: false,
                tty: false,
                warn_no_tty: true
            }
        );
        // Neither flag: the plain unary exec, whatever stdin is.
        let plain = Mode::of(false, false, true);
        assert!(!plain.stdin && !plain.tty && !plain.warn_no_tty);
    }

    #[test]
    fn the_terminal_goes_raw_only_when_it_types_into_a_remote_one() {
        assert!(Mode::of(true, true, true).raw());
        assert!(!Mode::of(false, true, true).raw());
        assert!(!Mode::of(true, false, true).raw());
        assert!(!Mode::of(true, true, false).raw());
    }
}
