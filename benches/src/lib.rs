//! Shared pieces of quiver's benchmark binaries: loading texmex data ([`data`]) and turning
//! timings and hits into the reported numbers ([`stats`]).

pub mod data;
pub mod stats;
