//! Shared pieces of quiver's benchmark binaries: loading texmex data ([`data`]), turning
//! timings and hits into numbers ([`stats`]) and printing them ([`report`]).

pub mod data;
pub mod report;
pub mod scifact;
pub mod stats;
