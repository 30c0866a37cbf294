//! `rafter exec -i` and `-t` end to end: the CLI streams to a master, the
//! master to the pod's node agent, the agent to a Docker exec, and back.
//!
//! Needs Docker, as tests/agent.rs does. One node (`exec-node-1`, pod CIDR
//! 10.208.0.0/16), one demo pod, then: a shell fed line by line through a
//! pipe, answering between lines; stdin's EOF reaching the command; a shell
//! on a remote terminal driven through a real pseudo-terminal, with its
//! size at start and after a SIGWINCH; `-t` without a terminal.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::agent::{build_demo_image, clean_docker, join_node};
use common::{Cluster, wait_for};
use rafter_client::Client;
use rafter_proto::api;
use rustix::termios::{self, LocalModes, Winsize};
use serde_json::json;

const NODE: &str = "exec-node-1";
const POD: &str = "shell";

/// A running demo pod on the node, ready to exec into.
async fn ready_pod(cluster: &Cluster, client: &Client) {
    build_demo_image(cluster);
    let pod: api::Pod = serde_json::from_value(json!({
        "metadata": {"name": POD, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "main", "image": "rafter/demo:latest"}],
        },
    }))
    .expect("pod manifest");
    client.create(&pod).await.expect("create pod");
    wait_for("the pod Running", Duration::from_secs(90), || async {
        let pod = client.get_object::<api::Pod>("default", POD).await.ok()?;
        (pod.status?.phase == "Running").then_some(())
    })
    .await;
}

/// Everything read from `from` so far, filled by a thread until EOF or an
/// error (a pseudo-terminal's master reads EIO once every slave is closed).
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    fn reading(mut from: impl Read + Send + 'static) -> Collected {
        let collected = Collected::default();
        let into = collected.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                into.0.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        collected
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until the text contains `what`.
    async fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} within 30 s; got {:?}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits (30 s at most) for the child to exit.
async fn exit_of(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("rafter exec did not exit within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Show the exec items of the agent issue: `rafter exec -i` and `-it`
/// through a master to the agent, with stdin, a terminal and exit codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdin_and_drives_a_remote_terminal() {
    clean_docker(&[NODE]).await;
    let cluster = Cluster::start(1, &["--pod-cidr", "10.208.0.0/16"]);
    let client = cluster.client().await;
    let agent = join_node(&cluster, &client, NODE).await;
    ready_pod(&cluster, &client).await;

    // (a) -i: a shell fed through a pipe answers each line before the next
    // is sent (output streams while stdin is open), a line is consumed by
    // `read`, stderr stays apart, and the CLI exits with the shell's code.
    let mut shell = cluster
        .cli_command(&["exec", "-i", POD, "--", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rafter exec -i");
    let out = Collected::reading(shell.stdout.take().unwrap());
    let err = Collected::reading(shell.stderr.take().unwrap());
    let mut stdin = shell.stdin.take().unwrap();
    stdin.write_all(b"echo hello-$((1+2))\n").unwrap();
    out.wait_for("hello-3").await;
    // `ready` is printed just before `read` runs, so the next line reaches
    // `read` (were it sent with this one, the shell would buffer it).
    stdin
        .write_all(b"echo ready; read x; echo got-$x; echo oops >&2\n")
        .unwrap();
    out.wait_for("ready").await;
    stdin.write_all(b"world\n").unwrap();
    out.wait_for("got-world").await;
    err.wait_for("oops").await;
    stdin.write_all(b"exit 3\n").unwrap();
    let status = exit_of(&mut shell).await;
    assert_eq!(status.code(), Some(3), "stdout {:?}", out.text());
    assert!(!out.text().contains("oops"), "stderr kept apart");
    drop(stdin);

    // The end of our stdin closes the command's: `cat` sees EOF and exits.
    let mut cat = cluster
        .cli_command(&["exec", "-i", POD, "--", "sh", "-c", "cat; echo eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rafter exec -i cat");
    let out = Collected::reading(cat.stdout.take().unwrap());
    cat.stdin
        .take()
        .unwrap()
        .write_all(b"line 1\nline 2")
        .unwrap();
    let status = exit_of(&mut cat).await;
    assert!(status.success(), "{status}");
    out.wait_for("line 1\nline 2eof\n").await;

    // (b) -it through a real pseudo-terminal of 37 rows and 91 columns.
    use rustix::pty::OpenptFlags;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .expect("open a pseudo-terminal");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let slave_path = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(slave_path.to_str().expect("path"))
        .expect("open the pty's slave");
    let winsize = |rows, cols| Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    termios::tcsetwinsize(&slave, winsize(37, 91)).expect("TIOCSWINSZ");
    let cooked = termios::tcgetattr(&slave).expect("tcgetattr");
    assert!(
        cooked
            .local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO)
    );
    let mut tty = cluster
        .cli_command(&["exec", "-it", POD, "--", "sh"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .spawn()
        .expect("rafter exec -it");
    let master = std::fs::File::from(master);
    let screen = Collected::reading(master.try_clone().unwrap());
    let mut keyboard = master;
    // The remote shell's prompt: it runs, on a terminal.
    screen.wait_for("#").await;
    let raw = termios::tcgetattr(&slave).expect("tcgetattr");
    assert!(
        !raw.local_modes
            .intersects(LocalModes::ICANON | LocalModes::ECHO),
        "rafter exec -it puts the local terminal in raw mode"
    );
    keyboard.write_all(b"tty; stty size\n").unwrap();
    screen.wait_for("37 91").await;
    assert!(screen.text().contains("/dev/pts/"), "{:?}", screen.text());

    // A resize (SIGWINCH) reaches the remote terminal. Asked again until
    // seen: the signal and the typed line travel separately.
    termios::tcsetwinsize(&slave, winsize(40, 100)).expect("TIOCSWINSZ");
    let pid = tty.id().to_string();
    let ok = Command::new("kill")
        .args(["-WINCH", &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
    wait_for("the new size", Duration::from_secs(20), || {
        let seen = screen.text().contains("40 100");
        if !seen {
            keyboard.write_all(b"stty size\n").unwrap();
        }
        async move {
            if !seen {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            seen.then_some(())
        }
    })
    .await;
    keyboard.write_all(b"exit\n").unwrap();
    let status = exit_of(&mut tty).await;
    assert!(status.success(), "{status}: {:?}", screen.text());
    let restored = termios::tcgetattr(&slave).expect("tcgetattr");
    assert_eq!(
        restored.local_modes, cooked.local_modes,
        "the terminal is restored when the command exits"
    );

    // (c) -t without a terminal: kubectl's warning, and the command runs.
    let (ok, out, err) = cluster.cli(&["exec", "-t", POD, "--", "echo", "no-tty"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("Unable to use a TTY - input is not a terminal or the right kind of file"),
        "{err}"
    );
    assert_eq!(out, "no-tty\n");
    // Likewise with -i: stdin still flows, without a terminal (no \r).
    let mut it = cluster
        .cli_command(&["exec", "-it", POD, "--", "sh", "-c", "read x; echo got-$x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rafter exec -it without a terminal");
    it.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = it.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got-piped\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unable to use a TTY"));

    drop(agent);
    clean_docker(&[NODE]).await;
}
