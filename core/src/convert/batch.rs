//! The lists of a `SearchBatch` (its searches, or its queries), checked as one: their length,
//! and each item's collection and consistency against the batch's.

use quiver_proto::v1 as pb;

use super::{invalid, Limits};
use crate::error::{Error, Result};

/// Validates the items of a batch's list `list` (`searches` or `queries`): at least one and at
/// most `limits.max_batch_points`, each of the batch's collection and consistency (`parts`
/// gives an item's; empty and unset mean the batch's), each by `validate`, its errors named by
/// place (`searches[3].top_k`).
pub(super) fn items<R, T>(
    list: &str,
    items: &[R],
    batch: &pb::SearchBatchRequest,
    limits: &Limits,
    parts: impl Fn(&R) -> (&str, i32),
    validate: impl Fn(&R) -> Result<T>,
) -> Result<Vec<T>> {
    if items.is_empty() {
        return Err(invalid(list, "empty batch"));
    }
    if items.len() > limits.request.max_batch_points {
        return Err(invalid(
            list,
            format!(
                "{} {list} exceed the limit of {} per batch (limits.max_batch_points)",
                items.len(),
                limits.request.max_batch_points
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |e: Error| match e {
                Error::InvalidArgument { field, message } => Error::InvalidArgument {
                    field: format!("{list}[{i}].{field}"),
                    message,
                },
                other => other,
            };
            let (collection, consistency) = parts(item);
            if !collection.is_empty() && collection != batch.collection {
                return Err(invalid(
                    format!("{list}[{i}].collection"),
                    format!(
                        "`{collection}` differs from the batch's collection `{}`",
                        batch.collection
                    ),
                ));
            }
            if consistency != 0 && consistency != batch.consistency {
                return Err(invalid(
                    format!("{list}[{i}].consistency"),
                    "differs from the batch's (set it on the batch)",
                ));
            }
            validate(item).map_err(at)
        })
        .collect()
}
