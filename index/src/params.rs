//! HNSW graph parameters and their bounds: what a collection spec names, without the graph
//! (so crates that only validate specs do not link the graph library).

/// Graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HnswParams {
    /// Neighbours kept per node per layer (the graph library allows at most 256).
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
        }
    }
}

/// Largest `m` accepted (the graph library stops the process above 256).
pub const MAX_M: usize = 128;
/// Largest `ef_construction` accepted.
pub const MAX_EF_CONSTRUCTION: usize = 4096;
