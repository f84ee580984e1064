//! Tests of the `quiver` binary as users run it: real child processes on loopback ports.

mod cluster;
mod crash;
mod features;
mod new_user;
mod shards;
mod snapshots;
mod support;
mod tour;
