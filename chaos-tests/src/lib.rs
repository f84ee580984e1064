//! Failure tests of a quiver cluster, with real processes on loopback.
//!
//! - [`cluster`]: the nemesis harness: N `quiver serve` processes and a `quiver router`, every
//!   node-to-node link through its own fault-injecting proxy (so partitions are symmetric), and
//!   kill -9, restart, SIGSTOP/SIGCONT, wipe, isolate and heal;
//! - [`workload`]: clients that record every operation with its invoke and complete times: a
//!   register workload (put / linearizable get per key) and an ingest workload (acknowledged
//!   points must all survive);
//! - [`history`] and [`linearizability`]: the recorder and a Porcupine-style checker.
//!
//! The scenarios live in `tests/`; each runs for a bounded time and prints a `chaos-report` line
//! (writes/s during the chaos, failover times) to stderr.

pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod workload;
