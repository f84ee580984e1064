//! HNSW graph parameters and their bounds: what a collection spec names.

/// Graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HnswParams {
    /// Neighbours kept per node on the upper layers (layer 0 keeps twice as many).
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

/// Largest `m` accepted (a layer-0 list of 256 links is 1 KiB per node).
pub const MAX_M: usize = 128;
/// Largest `ef_construction` accepted.
pub const MAX_EF_CONSTRUCTION: usize = 4096;
