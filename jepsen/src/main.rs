//! `rafter-jepsen`: a thin wrapper around [`rafter_jepsen::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    rafter_jepsen::cli::main()
}
