//! Integration tests of a real node: RocksDB on disk, gRPC on an ephemeral loopback port, the
//! generated client.

mod bad_input;
mod embed;
mod lifecycle;
mod persistence;
mod query;
mod recall;
mod rest;
mod search_batch;
mod support;
mod updates;
