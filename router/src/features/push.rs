//! A push: rows of one view, streamed, every one checked against the view's current schema
//! before any is written; then split by the shard each entity's key hashes to and written
//! through that shard's log in commands of bounded size, each under its own idempotency key
//! (`<request_id>/<shard>/<part>`), so a push sent again with its id writes nothing twice.

use futures::future::join_all;
use quiver_core::convert::features as convert;
use quiver_core::features::FeaturesCommand;
use quiver_core::Error;
use quiver_features::layout::PushLayout;
use quiver_features::row::FeatureRow;
use quiver_features::Value;
use quiver_proto::v1 as pb;
use tonic::{Status, Streaming};

use super::{feature_store, now_micros, registry_having, status};
use crate::coordinator::{request_id_or_new, Coordinator, Route};

/// The most rows one push may carry (a larger file is pushed in several).
pub const MAX_PUSH_ROWS: usize = 1_000_000;
/// The most rows, and about the most bytes, of one command through a shard's log.
const COMMAND_ROWS: usize = 4096;
const COMMAND_BYTES: usize = 4 << 20;

/// How a row is named in errors: by the line it came from when the client says, else by its
/// place in the push.
pub(crate) fn row_name(line: u64, ordinal: usize) -> String {
    match line {
        0 => format!("rows[{ordinal}]"),
        n => format!("line {n}"),
    }
}

/// About the bytes a row takes in a command.
fn row_bytes(row: &FeatureRow) -> usize {
    let value = |v: &Value| match v {
        Value::String(s) => s.len() + 4,
        Value::Float32List(l) => 4 * l.len() + 4,
        _ => 9,
    };
    row.key.0.len() + 24 + row.values.iter().map(value).sum::<usize>()
}

/// Splits one shard's rows into commands' worth.
fn commands(rows: Vec<FeatureRow>) -> Vec<Vec<FeatureRow>> {
    let mut out = vec![Vec::new()];
    let mut bytes = 0;
    for row in rows {
        let size = row_bytes(&row);
        let last = out.last().map_or(0, Vec::len);
        if last > 0 && (last >= COMMAND_ROWS || bytes + size > COMMAND_BYTES) {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(current) = out.last_mut() {
            current.push(row);
        }
    }
    out
}

/// Checks and writes the rows `stream` carries; answers the rows written.
pub(super) async fn push(
    coordinator: &Coordinator,
    mut stream: Streaming<pb::PushFeaturesRequest>,
) -> Result<u64, Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::from(Error::invalid("feature_view", "the push sent no message")))?;
    if first.feature_view.is_empty() {
        return Err(Error::invalid("feature_view", "required: the view the rows are of").into());
    }
    let registry = registry_having(coordinator, |r| {
        r.feature_views.contains_key(&first.feature_view)
    })
    .await;
    let view = registry.view(&first.feature_view).map_err(status)?;
    let keys = registry.view_keys(view).map_err(status)?;
    let schema = view.current();
    let layout = PushLayout::new("columns", &keys, &schema, &first.columns).map_err(status)?;
    let (offline, online) = convert::push_target(&first.to)?;
    let request_id = request_id_or_new(&first.request_id);
    let columns = first.columns.clone();
    let placement = feature_store(coordinator).await?;
    let count = placement.shards.len();
    let created = now_micros();

    let mut parts: Vec<Vec<FeatureRow>> = vec![Vec::new(); count];
    let mut ordinal = 0usize;
    let mut message = Some(first);
    while let Some(m) = message {
        if !m.feature_view.is_empty() && m.feature_view != view.name {
            return Err(Error::invalid(
                "feature_view",
                format!(
                    "a push is of one view: `{}`, then `{}`",
                    view.name, m.feature_view
                ),
            )
            .into());
        }
        if !m.columns.is_empty() && m.columns != columns {
            return Err(Error::invalid(
                "columns",
                "the columns are named once, by the first message (later ones repeat them or \
                 leave them empty)",
            )
            .into());
        }
        for row in m.rows {
            if ordinal >= MAX_PUSH_ROWS {
                return Err(Error::invalid(
                    "rows",
                    format!("more than {MAX_PUSH_ROWS} rows; push them in several pushes"),
                )
                .into());
            }
            let at = row_name(row.line, ordinal);
            ordinal += 1;
            if row.values.len() != columns.len() {
                return Err(Error::invalid(
                    at,
                    format!("{} values for {} columns", row.values.len(), columns.len()),
                )
                .into());
            }
            let mut cells = Vec::with_capacity(columns.len());
            for (i, cell) in row.values.iter().enumerate() {
                let value = convert::value_from_proto(cell, layout.column_type(i))
                    .map_err(|m| Error::invalid(format!("{at}, column `{}`", columns[i]), m))?;
                cells.push(value);
            }
            let row = layout.row(cells, created, &at).map_err(status)?;
            parts[row.key.shard(count)].push(row);
        }
        message = stream.message().await?;
    }

    let (view_id, version) = (view.id, schema.version);
    let fields: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
    let fields = &fields;
    let writes = parts
        .into_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(shard, rows)| {
            let (placement, request_id) = (&placement, &request_id);
            async move {
                for (part, rows) in commands(rows).into_iter().enumerate() {
                    let command = FeaturesCommand::Push {
                        view_id,
                        version,
                        rows,
                        offline,
                        online,
                        fields: fields.clone(),
                    };
                    let key = format!("{request_id}/{shard}/{part}");
                    let (key, command) = (&key, &command);
                    coordinator
                        .on_shard(
                            placement,
                            shard,
                            Route::Leader,
                            |group, client| async move {
                                client.features_write(group, key, command).await
                            },
                        )
                        .await?;
                }
                Ok::<(), Status>(())
            }
        });
    for written in join_all(writes).await {
        written?;
    }
    Ok(ordinal as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_features::EntityKey;

    #[test]
    fn commands_are_bounded_in_rows_and_bytes() {
        let row = |text: usize| FeatureRow {
            key: EntityKey(vec![1; 9]),
            event_ts: 0,
            created_ts: 0,
            values: vec![Value::String("x".repeat(text))],
        };
        let small: Vec<FeatureRow> = (0..COMMAND_ROWS * 2 + 1).map(|_| row(1)).collect();
        let sizes: Vec<usize> = commands(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, [COMMAND_ROWS, COMMAND_ROWS, 1]);
        let large: Vec<FeatureRow> = (0..5).map(|_| row(COMMAND_BYTES / 2)).collect();
        assert_eq!(commands(large).len(), 5);
        assert_eq!(commands(Vec::new()).len(), 1);
    }
}
