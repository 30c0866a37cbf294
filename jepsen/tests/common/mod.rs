//! Running `rafter-jepsen test` end to end from the integration tests.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

/// The `rafter` binary under test: `$RAFTER_BIN`, else the one cargo built
/// next to `rafter-jepsen` (target/debug/rafter, honouring CARGO_TARGET_DIR).
/// Cargo does not expose other packages' binaries to a test, so it must have
/// been built already: `cargo build --workspace`.
pub fn rafter_bin() -> PathBuf {
    let bin = std::env::var_os("RAFTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_BIN_EXE_rafter-jepsen")).with_file_name("rafter")
        });
    assert!(
        bin.is_file(),
        "rafter binary missing at {}: run `cargo build --workspace` first (or set RAFTER_BIN)",
        bin.display()
    );
    bin
}

/// Runs `rafter-jepsen test ARGS` against the built `rafter` with its run
/// directory at `run_dir`, asserts it exited successfully with a valid
/// overall verdict, and returns its stdout and `results.json`.
pub fn run_valid(args: &[&str], run_dir: &Path) -> (String, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_rafter-jepsen"))
        .arg("test")
        .args(args)
        .arg("--rafter-bin")
        .arg(rafter_bin())
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .expect("run rafter-jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rafter-jepsen test {} exited {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        out.status.code()
    );
    assert!(stdout.contains("overall: valid"), "{stdout}");
    let results =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap())
            .unwrap();
    (stdout, results)
}
