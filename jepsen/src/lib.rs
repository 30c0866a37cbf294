//! Rafter's Jepsen-style test suite: run a real cluster of `rafter server`
//! processes, drive concurrent client operations against it while injecting
//! faults, record everything in a history, and check the history.
//!
//! Module map:
//!
//! - [`history`]: the JSON Lines history format (stable, see `README.md`),
//!   its reader and writer, and pairing of invokes with completions.
//! - [`checker`]: the register model and the linearizability checker
//!   (Wing & Gong / Lowe, as Porcupine does it); the set (exactly-once),
//!   durability, watch and lease checkers.
//! - [`cluster`]: `rafter server` processes in a run directory, on loopback
//!   or each in its own network namespace.
//! - [`netns`]: the namespaces, their bridge, and partitions as iptables
//!   drops.
//! - [`nemesis`]: scheduled faults (kill -9 / restart, SIGSTOP / SIGCONT,
//!   partitions), logged to the history.
//! - [`workload`]: the client side; `register` is read / write / cas, `set`
//!   exactly-once adds by read-modify-cas, `durability` fresh keys written
//!   through kill-all power losses, `watch` writers with a watcher on every
//!   master, `lease` keys on kept-alive and abandoned leases.
//! - [`plot`]: the latency-over-time plot (SVG) with fault windows.
//! - [`run`]: one test run in Jepsen's phases, writing `history.jsonl` and
//!   `results.json`.
//! - [`cli`]: the `rafter-jepsen` command line (`check`, `test`).

pub mod checker;
pub mod cli;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod plot;
pub mod run;
pub mod slow_links;
pub mod workload;
