//! Fusion of ranked lists (one per modality: vector, text) into one ranking, with the share of
//! each list in every fused score kept for `explain`.
//!
//! - **RRF** (reciprocal rank fusion): `Σ 1 / (k + rank)` over the lists a key is in (ranks
//!   from 1); scores are ignored, only ranks count.
//! - **Weighted**: `Σ weightᵢ · normᵢ(score)`, each list's scores normalised first so they
//!   compare: `minmax` maps a list onto [0, 1] (best 1), `zscore` to standard scores (mean 0,
//!   standard deviation 1, better positive). A key missing from a list gets that list's lowest
//!   normalised value (it ranked below everything the list returned).
//!
//! Lists come best first; each says whether its scores are better higher (BM25, cosine) or
//! lower (l2 distances); a score that is not a finite number is refused. Ties in the fused
//! score go to the key that sorts first.

use std::collections::HashMap;
use std::hash::Hash;

/// How a list's scores are made comparable before they are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalization {
    /// Onto [0, 1]: the best 1, the worst 0 (all 1 when every score is equal).
    #[default]
    MinMax,
    /// Standard scores: `(s − mean) / standard deviation`, better positive (all 0 when every
    /// score is equal).
    ZScore,
}

/// How ranked lists are fused.
#[derive(Debug, Clone, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion with constant `k` (60 is usual).
    Rrf { k: f32 },
    /// Normalised scores, weighted per list (`weights[i]` for list `i`).
    Weighted {
        weights: Vec<f32>,
        normalization: Normalization,
    },
}

/// One ranked list: keys with their raw scores, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked<K> {
    pub hits: Vec<(K, f32)>,
    pub higher_is_better: bool,
}

/// A key's place in one list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// 1 for the best.
    pub rank: usize,
    /// The score the list gave.
    pub raw: f32,
    /// What it added to the fused score.
    pub fused: f32,
}

/// A key with its fused score and where it stood in each list (None where it was absent). The
/// score is the sum of the lists' shares, where an absent key's share is that list's floor
/// (0, except under `zscore`: the list's lowest normalised value, weighted).
#[derive(Debug, Clone, PartialEq)]
pub struct Fused<K> {
    pub key: K,
    pub score: f32,
    pub lists: Vec<Option<Contribution>>,
}

/// Why a fusion cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FusionError {
    #[error("rrf k must be a finite number above 0, not {0}")]
    RrfK(f32),
    #[error("weights must be finite and not negative, and not all 0: {0:?}")]
    Weights(Vec<f32>),
    #[error("{weights} weights for {lists} lists")]
    WeightCount { weights: usize, lists: usize },
    #[error("list {list} holds a score that is not a finite number")]
    NotFinite { list: usize },
}

impl Fusion {
    /// Checks the parameters for fusing `lists` lists.
    pub fn check(&self, lists: usize) -> Result<(), FusionError> {
        match self {
            Fusion::Rrf { k } if !(k.is_finite() && *k > 0.0) => Err(FusionError::RrfK(*k)),
            Fusion::Rrf { .. } => Ok(()),
            Fusion::Weighted { weights, .. } => {
                if weights.len() != lists {
                    return Err(FusionError::WeightCount {
                        weights: weights.len(),
                        lists,
                    });
                }
                let valid = weights.iter().all(|w| w.is_finite() && *w >= 0.0)
                    && weights.iter().any(|w| *w > 0.0);
                match valid {
                    true => Ok(()),
                    false => Err(FusionError::Weights(weights.clone())),
                }
            }
        }
    }
}

/// Each score of `list` normalised, better higher, in the list's order.
fn normalised<K>(list: &Ranked<K>, normalization: Normalization) -> Vec<f32> {
    let sign = if list.higher_is_better { 1.0 } else { -1.0 };
    let scores: Vec<f64> = list.hits.iter().map(|(_, s)| sign * *s as f64).collect();
    if scores.is_empty() {
        return Vec::new();
    }
    match normalization {
        Normalization::MinMax => {
            let (lo, hi) = scores
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                    (lo.min(*s), hi.max(*s))
                });
            scores
                .iter()
                .map(|s| match hi > lo {
                    true => ((s - lo) / (hi - lo)) as f32,
                    false => 1.0,
                })
                .collect()
        }
        Normalization::ZScore => {
            let n = scores.len() as f64;
            let mean = scores.iter().sum::<f64>() / n;
            let sd = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
            scores
                .iter()
                .map(|s| match sd > 0.0 {
                    true => ((s - mean) / sd) as f32,
                    false => 0.0,
                })
                .collect()
        }
    }
}

/// The best `limit` keys of `lists` fused by `fusion` (checked first with [`Fusion::check`]).
/// A key listed twice in one list counts at its first (best) place.
pub fn fuse<K: Copy + Eq + Hash + Ord>(
    lists: &[Ranked<K>],
    fusion: &Fusion,
    limit: usize,
) -> Result<Vec<Fused<K>>, FusionError> {
    fusion.check(lists.len())?;
    if let Some(list) = lists
        .iter()
        .position(|l| l.hits.iter().any(|(_, s)| !s.is_finite()))
    {
        return Err(FusionError::NotFinite { list });
    }
    let mut fused: HashMap<K, Fused<K>> = HashMap::new();
    let mut floors = vec![0.0f32; lists.len()];
    for (i, list) in lists.iter().enumerate() {
        let shares: Vec<f32> = match fusion {
            Fusion::Rrf { k } => (0..list.hits.len())
                .map(|r| 1.0 / (k + (r + 1) as f32))
                .collect(),
            Fusion::Weighted {
                weights,
                normalization,
            } => {
                let norm = normalised(list, *normalization);
                floors[i] = weights[i] * norm.iter().copied().fold(f32::INFINITY, f32::min);
                norm.iter().map(|n| weights[i] * n).collect()
            }
        };
        for (rank, ((key, raw), share)) in list.hits.iter().zip(shares).enumerate() {
            let entry = fused.entry(*key).or_insert_with(|| Fused {
                key: *key,
                score: 0.0,
                lists: vec![None; lists.len()],
            });
            if entry.lists[i].is_none() {
                entry.lists[i] = Some(Contribution {
                    rank: rank + 1,
                    raw: *raw,
                    fused: share,
                });
            }
        }
    }
    let mut out: Vec<Fused<K>> = fused
        .into_values()
        .map(|mut f| {
            f.score = f
                .lists
                .iter()
                .zip(&floors)
                .map(|(c, floor)| match (c, fusion) {
                    (Some(c), _) => c.fused,
                    (None, Fusion::Weighted { .. }) if floor.is_finite() => *floor,
                    (None, _) => 0.0,
                })
                .sum();
            f
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
    out.truncate(limit);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(hits: &[(u32, f32)], higher_is_better: bool) -> Ranked<u32> {
        Ranked {
            hits: hits.to_vec(),
            higher_is_better,
        }
    }

    fn keys(fused: &[Fused<u32>]) -> Vec<u32> {
        fused.iter().map(|f| f.key).collect()
    }

    #[test]
    fn rrf_adds_reciprocal_ranks_and_explains_them() {
        let vector = list(&[(1, 0.9), (2, 0.8), (3, 0.1)], true);
        let text = list(&[(3, 12.0), (1, 7.0)], true);
        let fused = fuse(&[vector, text], &Fusion::Rrf { k: 60.0 }, 10).unwrap();
        assert_eq!(keys(&fused), [1, 3, 2]);
        let one = &fused[0];
        assert!((one.score - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-7);
        assert_eq!(one.lists[0].unwrap().rank, 1);
        assert_eq!(one.lists[1].unwrap().rank, 2);
        assert_eq!(one.lists[1].unwrap().raw, 7.0);
        assert_eq!(fused[2].lists[1], None);
        assert_eq!(
            keys(&fuse(&[list(&[(5, 1.0)], true)], &Fusion::Rrf { k: 1.0 }, 0).unwrap()),
            [] as [u32; 0]
        );
    }

    #[test]
    fn weighted_minmax_normalises_each_list_and_turns_distances_around() {
        // l2 distances: lower is better
        let vector = list(&[(1, 0.5), (2, 1.0), (3, 2.5)], false);
        let text = list(&[(3, 10.0), (4, 5.0), (2, 0.0)], true);
        let fusion = Fusion::Weighted {
            weights: vec![0.7, 0.3],
            normalization: Normalization::MinMax,
        };
        let fused = fuse(&[vector, text], &fusion, 10).unwrap();
        let score = |k: u32| fused.iter().find(|f| f.key == k).unwrap().score;
        assert!((score(1) - 0.7).abs() < 1e-6);
        assert!((score(2) - 0.7 * 0.75).abs() < 1e-6);
        assert!((score(3) - 0.3).abs() < 1e-6);
        assert!((score(4) - 0.15).abs() < 1e-6);
        assert_eq!(keys(&fused), [1, 2, 3, 4]);
        let two = fused.iter().find(|f| f.key == 2).unwrap();
        assert_eq!(two.lists[1].unwrap().rank, 3);
        assert_eq!(two.lists[1].unwrap().fused, 0.0);
    }

    #[test]
    fn weighted_zscore_gives_a_missing_key_its_lists_lowest_score() {
        let vector = list(&[(1, 3.0), (2, 2.0), (3, 1.0)], true);
        let text = list(&[(4, 1.0), (1, 1.0)], true);
        let fusion = Fusion::Weighted {
            weights: vec![1.0, 1.0],
            normalization: Normalization::ZScore,
        };
        let fused = fuse(&[vector, text], &fusion, 10).unwrap();
        let score = |k: u32| fused.iter().find(|f| f.key == k).unwrap().score;
        let z = 1.0 / (2.0f32 / 3.0).sqrt();
        // equal text scores are all 0; vector scores are ±z and 0
        assert!((score(1) - z).abs() < 1e-5);
        assert!(score(2).abs() < 1e-5);
        assert!((score(3) + z).abs() < 1e-5);
        // absent from the vector list: its lowest, -z
        assert!((score(4) + z).abs() < 1e-5);
        assert_eq!(keys(&fused), [1, 2, 3, 4]);
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        let lists = [list(&[(1, 1.0)], true), list(&[], true)];
        for k in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                fuse(&lists, &Fusion::Rrf { k }, 10),
                Err(FusionError::RrfK(_))
            ));
        }
        for weights in [vec![-0.1, 1.0], vec![f32::NAN, 1.0], vec![0.0, 0.0]] {
            let fusion = Fusion::Weighted {
                weights,
                normalization: Normalization::MinMax,
            };
            assert!(matches!(
                fuse(&lists, &fusion, 10),
                Err(FusionError::Weights(_))
            ));
        }
        let fusion = Fusion::Weighted {
            weights: vec![1.0],
            normalization: Normalization::MinMax,
        };
        assert_eq!(
            fuse(&lists, &fusion, 10),
            Err(FusionError::WeightCount {
                weights: 1,
                lists: 2
            })
        );
        let nan = [list(&[(1, 1.0)], true), list(&[(2, f32::NAN)], true)];
        assert_eq!(
            fuse(&nan, &Fusion::Rrf { k: 60.0 }, 10),
            Err(FusionError::NotFinite { list: 1 })
        );
        // an empty list is fine: the other one ranks alone
        let fusion = Fusion::Weighted {
            weights: vec![0.5, 0.5],
            normalization: Normalization::MinMax,
        };
        assert_eq!(keys(&fuse(&lists, &fusion, 10).unwrap()), [1]);
    }
}
