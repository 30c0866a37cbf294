//! `rafter local up | status | down`: a user's first cluster, as real
//! background processes, and resuming it from its data.

mod common;

use std::process::Command;

fn rafter(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(common::rafter_bin())
        .args(args)
        .env("RAFTER_CONFIG", config)
        .env_remove("RAFTER_ENDPOINTS")
        .output()
        .expect("run rafter");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stops the local cluster even when an assertion fails.
struct Down<'a>(&'a str, &'a std::path::Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = rafter(&["local", "down", "--dir", self.0], self.1);
    }
}

#[test]
fn local_up_writes_the_client_config_and_down_then_up_resumes_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("local");
    let dir = dir.to_str().unwrap();
    let config = tmp.path().join("config");
    // Three consecutive free ports (and their metrics ports, +1000).
    let base = loop {
        let p = common::free_port();
        if p < 60_000
            && (0..3).all(|i| {
                std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()
                    && std::net::TcpListener::bind(("127.0.0.1", p + i + 1000)).is_ok()
            })
        {
            break p;
        }
    };
    let base = base.to_string();
    let _down = Down(dir, &config);

    let (ok, out, err) = rafter(
        &["local", "up", "--dir", dir, "--base-port", &base],
        &config,
    );
    assert!(ok, "local up failed: {out}\n{err}");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("endpoints"),
        "client config written"
    );
    let (ok, _, err) = rafter(&["kv", "put", "survives", "restart"], &config);
    assert!(ok, "put through the written config: {err}");

    let (ok, out, err) = rafter(&["local", "status", "--dir", dir], &config);
    assert!(ok, "{err}");
    let status_table = out.split("\n\n").nth(1).unwrap_or_default();
    let leaders = status_table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(3) == Some("true"))
        .count();
    assert_eq!(leaders, 1, "one leader in local status:\n{out}");

    let (ok, _, err) = rafter(&["local", "down", "--dir", dir], &config);
    assert!(ok, "local down failed: {err}");
    for i in 0..3 {
        let port = base.parse::<u16>().unwrap() + i;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "master on port {port} still listens after down"
        );
    }

    let (ok, out, err) = rafter(&["local", "up", "--dir", dir], &config);
    assert!(ok, "second local up failed: {out}\n{err}");
    let (ok, out, err) = rafter(&["kv", "get", "survives"], &config);
    assert!(ok, "{err}");
    assert_eq!(out, "survives\nrestart\n");
}
