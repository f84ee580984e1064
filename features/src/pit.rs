//! Point-in-time selection: which offline row of an entity a training example at time `T` sees.
//!
//! The row with the greatest event time `<= T`; when the view has a ttl, only rows with event
//! time `>= T - ttl` (both edges inclusive); among rows of equal event time, the greatest
//! created time, then the latest written. Optionally only rows created by `T` ("as known at
//! `T`": a late-arriving row is not seen by examples before it arrived), and only rows written
//! at or before a log position (a pinned read, which later rows never change).

use crate::row::RowStamp;
use crate::value::Micros;

/// What one entity row asks of one view's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PitQuery {
    /// The entity row's `event_timestamp`.
    pub at: Micros,
    /// The view's ttl (0: no lower bound).
    pub ttl_seconds: u64,
    /// Only rows with `created_ts <= at`.
    pub known_at: bool,
    /// Only rows written at or before this log position.
    pub max_index: Option<u64>,
}

/// The position in `rows` (one entity's, sorted ascending as [`RowStamp`] orders) of the row
/// `query` selects, if any qualifies.
pub fn select(rows: &[RowStamp], query: &PitQuery) -> Option<usize> {
    let end = rows.partition_point(|r| r.event_ts <= query.at);
    let oldest = match query.ttl_seconds {
        0 => i64::MIN,
        ttl => query.at.saturating_sub(
            i64::try_from(ttl)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
        ),
    };
    (0..end)
        .rev()
        .take_while(|&i| rows[i].event_ts >= oldest)
        .find(|&i| {
            let r = &rows[i];
            (!query.known_at || r.created_ts <= query.at)
                && query.max_index.is_none_or(|max| r.index <= max)
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: i64 = 1_000_000;

    fn stamp(event_s: i64, created_s: i64, index: u64) -> RowStamp {
        RowStamp {
            event_ts: event_s * S,
            created_ts: created_s * S,
            index,
        }
    }

    fn query(at_s: i64) -> PitQuery {
        PitQuery {
            at: at_s * S,
            ttl_seconds: 0,
            known_at: false,
            max_index: None,
        }
    }

    #[test]
    fn the_latest_row_at_or_before_the_time_is_chosen() {
        let rows = [stamp(10, 10, 1), stamp(20, 20, 2), stamp(30, 30, 3)];
        assert_eq!(select(&rows, &query(5)), None);
        assert_eq!(select(&rows, &query(10)), Some(0));
        assert_eq!(select(&rows, &query(29)), Some(1));
        assert_eq!(select(&rows, &query(30)), Some(2));
        assert_eq!(select(&rows, &query(1000)), Some(2));
        assert_eq!(select(&[], &query(1000)), None);
    }

    #[test]
    fn the_ttl_edge_is_inclusive() {
        let rows = [stamp(100, 100, 1)];
        let with_ttl = |at| PitQuery {
            ttl_seconds: 50,
            ..query(at)
        };
        assert_eq!(select(&rows, &with_ttl(150)), Some(0));
        assert_eq!(select(&rows, &with_ttl(151)), None);
        assert_eq!(select(&rows, &with_ttl(100)), Some(0));
    }

    #[test]
    fn ties_in_event_time_go_to_the_greatest_created_time() {
        // Sorted: equal event times, created 5 then 7 (the later correction).
        let rows = [stamp(10, 5, 2), stamp(10, 7, 1)];
        assert_eq!(select(&rows, &query(10)), Some(1));
        // Equal stamps: the later write.
        let rows = [stamp(10, 5, 1), stamp(10, 5, 4)];
        assert_eq!(select(&rows, &query(10)), Some(1));
    }

    #[test]
    fn rows_created_after_the_time_are_unseen_as_known_at_it() {
        // Event at 10, but only known at 40 (a late arrival); an older row known on time.
        let rows = [stamp(5, 5, 1), stamp(10, 40, 2)];
        let known = |at| PitQuery {
            known_at: true,
            ..query(at)
        };
        assert_eq!(select(&rows, &query(20)), Some(1));
        assert_eq!(select(&rows, &known(20)), Some(0));
        assert_eq!(select(&rows, &known(40)), Some(1));
    }

    #[test]
    fn a_pinned_position_hides_later_writes() {
        let rows = [stamp(10, 10, 3), stamp(12, 12, 9)];
        let pinned = PitQuery {
            max_index: Some(5),
            ..query(20)
        };
        assert_eq!(select(&rows, &pinned), Some(0));
        assert_eq!(select(&rows, &query(20)), Some(1));
    }

    proptest! {
        /// The selection is the greatest qualifying row by a plain scan of all of them.
        #[test]
        fn select_is_the_greatest_qualifying_row(
            raw in proptest::collection::vec((0i64..50, 0i64..50, 0u64..20), 0..40),
            at in 0i64..60,
            ttl in 0u64..30,
            known_at: bool,
            max_index in proptest::option::of(0u64..20),
        ) {
            let mut rows: Vec<RowStamp> = raw.iter().map(|&(e, c, i)| stamp(e, c, i)).collect();
            rows.sort();
            let q = PitQuery { at: at * S, ttl_seconds: ttl, known_at, max_index };
            let expected = rows
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.event_ts <= q.at
                        && (ttl == 0 || r.event_ts >= q.at - ttl as i64 * S)
                        && (!known_at || r.created_ts <= q.at)
                        && max_index.is_none_or(|m| r.index <= m)
                })
                .max_by_key(|(i, r)| (**r, *i))
                .map(|(i, _)| rows[i]);
            prop_assert_eq!(select(&rows, &q).map(|i| rows[i]), expected);
        }
    }
}
