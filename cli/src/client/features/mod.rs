//! `quiver features`: apply definitions, push rows, read online features and build
//! point-in-time-correct training sets.

mod definitions;
mod rows;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Subcommand, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use quiver_core::convert::features::value_from_proto;
use quiver_features::layout::PushLayout;
use quiver_features::value::{float32_json, format_timestamp, parse_timestamp};
use quiver_features::{JoinKey, ValueType, ViewVersion};
use quiver_proto::v1 as pb;
use quiver_proto::v1::features_client::FeaturesClient;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use super::{print_line, status, ConsistencyArg, Endpoint};

/// Rows per message of a push's stream.
const MESSAGE_ROWS: usize = 1000;

#[derive(Clone, Copy, ValueEnum)]
pub enum PushTo {
    Offline,
    Online,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OnlineFormat {
    Json,
    Table,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SetFormat {
    Csv,
    Json,
}

#[derive(Subcommand)]
pub enum FeaturesCommand {
    /// Plan a definitions file (YAML or JSON: entities, feature_views, feature_services) and
    /// apply it whole, as one change.
    Apply {
        file: PathBuf,
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Print every definition, with versions (JSON).
    List {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Push rows of a feature view from a CSV or JSON-lines file: its join keys,
    /// event_timestamp, optionally created_timestamp, and features.
    Push {
        view: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, value_enum, default_value = "both")]
        to: PushTo,
        /// Rows per push (each push is checked whole and written once).
        #[arg(long, default_value_t = 100_000)]
        batch_rows: usize,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// The newest features of some entities.
    Online {
        /// `view:feature`, comma-separated (`view` for all of a view's, `view@v2:feature` for a
        /// version's).
        #[arg(long, value_delimiter = ',', conflicts_with = "service")]
        features: Vec<String>,
        /// A feature service instead.
        #[arg(long)]
        service: Option<String>,
        /// An entity by its join keys, `user_id=1001` (`k1=a,k2=b`); repeat for more.
        #[arg(long = "entity", required = true)]
        entities: Vec<String>,
        /// Name features `view__feature`.
        #[arg(long)]
        full_feature_names: bool,
        #[arg(long, value_enum, default_value = "json")]
        format: OnlineFormat,
        #[arg(long, value_enum)]
        consistency: Option<ConsistencyArg>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Make offline rows online, inside the database: each entity's newest row with an event
    /// in a range, or (--incremental) of the entities pushed offline-only since the last run.
    Materialize {
        /// Views (none: every view).
        views: Vec<String>,
        /// RFC 3339 or epoch seconds.
        #[arg(
            long,
            conflicts_with = "incremental",
            required_unless_present = "incremental"
        )]
        start: Option<String>,
        /// (default: now)
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        incremental: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Statistics of a view's offline rows (count, nulls, mean, std, min, max, quantiles) in a
    /// window of event days.
    Stats {
        view: String,
        /// RFC 3339 or epoch seconds [default: the beginning].
        #[arg(long)]
        start: Option<String>,
        /// [default: now]
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        feature: Vec<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Drift of each feature in a window from a reference window: z-scores of the mean and
    /// std, PSI and KS, flagged over their thresholds.
    Drift {
        view: String,
        #[arg(long)]
        feature: Vec<String>,
        /// START..END (END may be left out: now).
        #[arg(long)]
        window: String,
        /// START..END, e.g. the days a model was trained on.
        #[arg(long)]
        reference: String,
        /// The z-score above which the mean or std has drifted.
        #[arg(long, default_value_t = 2.0)]
        threshold: f64,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// A point-in-time-correct training set: each entity row joined with the feature values
    /// known at its event_timestamp.
    Historical {
        /// Entity rows (CSV or JSON lines): join keys, event_timestamp, and any other columns.
        #[arg(long)]
        entities: PathBuf,
        #[arg(long, value_delimiter = ',', conflicts_with = "service")]
        features: Vec<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        full_feature_names: bool,
        /// Only rows created at or before each entity row's time.
        #[arg(long)]
        known_at: bool,
        /// Re-read the set as of a log position an earlier read printed.
        #[arg(long)]
        as_of_log: Option<String>,
        #[arg(long, value_enum, default_value = "csv")]
        format: SetFormat,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

async fn client(endpoint: &Endpoint) -> anyhow::Result<FeaturesClient<Channel>> {
    Ok(FeaturesClient::new(endpoint.channel().await?).max_decoding_message_size(usize::MAX))
}

pub async fn features(cmd: FeaturesCommand) -> anyhow::Result<()> {
    match cmd {
        FeaturesCommand::Apply {
            file,
            dry_run,
            endpoint,
        } => apply(&file, dry_run, &endpoint).await,
        FeaturesCommand::List { endpoint } => {
            let defs = definitions(&mut client(&endpoint).await?).await?;
            print_line(serde_json::to_string_pretty(&definitions_json(&defs))?)?;
            Ok(())
        }
        FeaturesCommand::Push {
            view,
            file,
            to,
            batch_rows,
            endpoint,
        } => push(&view, &file, to, batch_rows, &endpoint).await,
        FeaturesCommand::Online {
            features,
            service,
            entities,
            full_feature_names,
            format,
            consistency,
            endpoint,
        } => {
            let req = pb::GetOnlineFeaturesRequest {
                features,
                feature_service: service.unwrap_or_default(),
                entities: entity_columns(&entities)?,
                full_feature_names,
                consistency: consistency.map_or(0, ConsistencyArg::proto),
            };
            let answer = client(&endpoint)
                .await?
                .get_online_features(req)
                .await
                .map_err(status)?
                .into_inner();
            print_online(&answer, format)
        }
        FeaturesCommand::Materialize {
            views,
            start,
            end,
            incremental,
            endpoint,
        } => {
            let req = pb::MaterializeRequest {
                feature_views: views,
                start_micros: time("start", start)?,
                end_micros: time("end", end)?,
                incremental,
                request_id: uuid::Uuid::new_v4().to_string(),
            };
            materialize(req, &endpoint).await
        }
        FeaturesCommand::Stats {
            view,
            start,
            end,
            feature,
            endpoint,
        } => {
            let req = pb::FeatureStatsRequest {
                feature_view: view,
                features: feature,
                start_micros: time("start", start)?.unwrap_or(0),
                end_micros: time("end", end)?,
                ..Default::default()
            };
            let answer = stats(req, &endpoint).await?;
            print_stats(&answer.window)
        }
        FeaturesCommand::Drift {
            view,
            feature,
            window,
            reference,
            threshold,
            endpoint,
        } => {
            let (start, end) = window_arg("window", &window)?;
            let (reference_start, reference_end) = window_arg("reference", &reference)?;
            let req = pb::FeatureStatsRequest {
                feature_view: view,
                features: feature,
                start_micros: start,
                end_micros: end,
                reference_start_micros: Some(reference_start),
                reference_end_micros: reference_end,
                z_threshold: Some(threshold),
            };
            let answer = stats(req, &endpoint).await?;
            print_drift(&answer)
        }
        FeaturesCommand::Historical {
            entities,
            features,
            service,
            full_feature_names,
            known_at,
            as_of_log,
            format,
            endpoint,
        } => {
            let rows = rows::read(&entities)?;
            let req = pb::GetHistoricalFeaturesRequest {
                features,
                feature_service: service.unwrap_or_default(),
                columns: rows.columns,
                rows: rows.rows,
                full_feature_names,
                known_at,
                as_of_log: as_of_log.unwrap_or_default(),
                chunk_rows: 0,
            };
            historical(req, format, &endpoint).await
        }
    }
}

async fn definitions(c: &mut FeaturesClient<Channel>) -> anyhow::Result<pb::FeatureDefinitions> {
    Ok(c.list_definitions(pb::ListDefinitionsRequest {})
        .await
        .map_err(status)?
        .into_inner())
}

async fn apply(file: &Path, dry_run: bool, endpoint: &Endpoint) -> anyhow::Result<()> {
    let mut c = client(endpoint).await?;
    let current = definitions(&mut c).await?;
    let req = definitions::request(file, &current, dry_run)?;
    let answer = c.apply(req).await.map_err(status)?.into_inner();
    let mut counts = [0usize; 3];
    for item in &answer.plan {
        let slot = match item.action.as_str() {
            "created" => 0,
            "changed" => 1,
            _ => 2,
        };
        counts[slot] += 1;
        let changes = match item.changes.is_empty() {
            true => String::new(),
            false => format!("  ({})", item.changes.join(", ")),
        };
        print_line(format!(
            "{:<16} {:<24} {:<10} v{}{changes}",
            item.kind, item.name, item.action, item.version
        ))?;
    }
    let verb = if answer.applied {
        "applied"
    } else {
        "planned (dry run)"
    };
    print_line(format!(
        "{verb}: {} created, {} changed, {} unchanged",
        counts[0], counts[1], counts[2]
    ))?;
    Ok(())
}

fn value_type(name: &str) -> anyhow::Result<ValueType> {
    ValueType::parse(name).ok_or_else(|| anyhow!("the server named an unknown type `{name}`"))
}

/// A view's join keys and current schema, from the definitions.
fn view_schema(
    defs: &pb::FeatureDefinitions,
    view: &str,
) -> anyhow::Result<(Vec<JoinKey>, ViewVersion)> {
    let v = defs
        .feature_views
        .iter()
        .find(|v| v.name == view)
        .ok_or_else(|| {
            anyhow!("feature view `{view}` is not defined (quiver features apply FILE first)")
        })?;
    let mut keys = Vec::new();
    for name in &v.entities {
        let entity = defs
            .entities
            .iter()
            .find(|e| &e.name == name)
            .ok_or_else(|| anyhow!("entity `{name}` of view `{view}` is not defined"))?;
        for k in &entity.join_keys {
            keys.push(JoinKey {
                name: k.name.clone(),
                value_type: value_type(&k.r#type)?,
            });
        }
    }
    let fields = v
        .fields
        .iter()
        .map(|f| {
            Ok(quiver_features::Field {
                name: f.name.clone(),
                value_type: value_type(&f.r#type)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let schema = ViewVersion {
        version: v.version,
        fields,
        ttl_seconds: v.ttl_seconds,
    };
    Ok((keys, schema))
}

async fn push(
    view: &str,
    file: &Path,
    to: PushTo,
    batch_rows: usize,
    endpoint: &Endpoint,
) -> anyhow::Result<()> {
    if batch_rows == 0 {
        bail!("--batch-rows must be at least 1");
    }
    let mut c = client(endpoint).await?;
    let defs = definitions(&mut c).await?;
    let (keys, schema) = view_schema(&defs, view)?;
    let file_rows = rows::read(file)?;
    let place = |line: u64| format!("{}:{line}", file.display());
    // Every row is checked before any is sent, as the server checks each push.
    let layout = PushLayout::new("columns", &keys, &schema, &file_rows.columns)
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    for row in &file_rows.rows {
        let mut cells = Vec::with_capacity(row.values.len());
        for (i, cell) in row.values.iter().enumerate() {
            let column = &file_rows.columns[i];
            cells.push(
                value_from_proto(cell, layout.column_type(i))
                    .map_err(|m| anyhow!("{}, column `{column}`: {m}", place(row.line)))?,
            );
        }
        layout
            .row(cells, 0, &place(row.line))
            .map_err(|e| anyhow!("{e}"))?;
    }
    let to_name = match to {
        PushTo::Offline => "offline",
        PushTo::Online => "online",
        PushTo::Both => "both",
    };
    // The same file pushed again (after a failure part way) is written once: the request ids
    // follow from what is pushed.
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let digest = Sha256::new()
        .chain_update(view.as_bytes())
        .chain_update([0])
        .chain_update(to_name.as_bytes())
        .chain_update([0])
        .chain_update(&bytes)
        .finalize();
    let base: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();

    let total = file_rows.rows.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut pushed = 0u64;
    for (b, batch) in file_rows.rows.chunks(batch_rows).enumerate() {
        let mut messages: Vec<pb::PushFeaturesRequest> = batch
            .chunks(MESSAGE_ROWS)
            .map(|rows| pb::PushFeaturesRequest {
                rows: rows.to_vec(),
                ..Default::default()
            })
            .collect();
        if let Some(first) = messages.first_mut() {
            first.feature_view = view.to_string();
            first.columns = file_rows.columns.clone();
            first.to = to_name.to_string();
            first.request_id = format!("{base}/{b}");
        }
        let progress = bar.clone();
        let stream = futures::stream::iter(messages).inspect(move |m| {
            progress.inc(m.rows.len() as u64);
        });
        match c.push(stream).await {
            Ok(answer) => pushed += answer.into_inner().rows,
            Err(e) => {
                bar.abandon();
                return Err(status(e).context(format!(
                    "{pushed} of {total} rows were pushed; pushing the same file again is safe \
                     (rows already written are not written twice)"
                )));
            }
        }
    }
    bar.finish_and_clear();
    print_line(format!("pushed {pushed} rows to `{view}` ({to_name})"))?;
    Ok(())
}

/// Entities given as `k=v[,k2=v2]` as columns of values, one per entity (a key an entity does
/// not give is null for it).
fn entity_columns(
    entities: &[String],
) -> anyhow::Result<std::collections::HashMap<String, pb::FeatureValues>> {
    let mut parsed = Vec::with_capacity(entities.len());
    let mut names: Vec<String> = Vec::new();
    for e in entities {
        let mut pairs = Vec::new();
        for pair in e.split(',') {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("--entity `{e}`: expected join_key=value"))?;
            let k = k.trim().to_string();
            if !names.contains(&k) {
                names.push(k.clone());
            }
            pairs.push((k, v.trim().to_string()));
        }
        parsed.push(pairs);
    }
    Ok(names
        .into_iter()
        .map(|name| {
            let values = parsed
                .iter()
                .map(|pairs| pb::FeatureValue {
                    kind: pairs
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| pb::feature_value::Kind::StringValue(v.clone())),
                })
                .collect();
            (name, pb::FeatureValues { values })
        })
        .collect())
}

/// A value as JSON (a timestamp as RFC 3339).
pub(super) fn value_json(v: &pb::FeatureValue) -> Value {
    use pb::feature_value::Kind;
    match &v.kind {
        None => Value::Null,
        Some(Kind::Int64Value(i)) => json!(i),
        Some(Kind::Float64Value(f)) => json!(f),
        Some(Kind::Float32Value(f)) => float32_json(*f),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::TimestampMicros(t)) => json!(format_timestamp(*t)),
        Some(Kind::Float32ListValue(l)) => {
            Value::Array(l.values.iter().map(|f| float32_json(*f)).collect())
        }
    }
}

/// A value as a CSV cell (null: empty).
fn value_cell(v: &pb::FeatureValue) -> String {
    match value_json(v) {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn status_name(code: i32) -> &'static str {
    match pb::FeatureStatus::try_from(code) {
        Ok(pb::FeatureStatus::Present) => "PRESENT",
        Ok(pb::FeatureStatus::NotFound) => "NOT_FOUND",
        Ok(pb::FeatureStatus::NullValue) => "NULL_VALUE",
        Ok(pb::FeatureStatus::OutsideMaxAge) => "OUTSIDE_MAX_AGE",
        _ => "UNSPECIFIED",
    }
}

fn print_online(
    answer: &pb::GetOnlineFeaturesResponse,
    format: OnlineFormat,
) -> anyhow::Result<()> {
    match format {
        OnlineFormat::Json => {
            // One object per entity: its join keys, and per feature (`view:feature`) its
            // value, status and event time.
            let count = answer.results.first().map_or(0, |c| c.values.len());
            // (join keys come first; a feature's reference always has a `:`)
            let key_count = answer
                .references
                .iter()
                .take_while(|r| !r.contains(':'))
                .count();
            for e in 0..count {
                let mut fields = Vec::new();
                for (i, (column, reference)) in
                    answer.results.iter().zip(&answer.references).enumerate()
                {
                    let value = value_json(&column.values[e]);
                    if i < key_count {
                        fields.push(format!("{}:{value}", json!(reference)));
                        continue;
                    }
                    let time = match column.event_timestamps[e] {
                        0 => Value::Null,
                        t => json!(format_timestamp(t)),
                    };
                    let status = status_name(column.statuses[e]);
                    let feature =
                        json!({"value": value, "status": status, "event_timestamp": time});
                    fields.push(format!("{}:{feature}", json!(reference)));
                }
                print_line(format!("{{{}}}", fields.join(",")))?;
            }
        }
        OnlineFormat::Table => {
            print_line(answer.feature_names.join("\t"))?;
            let count = answer.results.first().map_or(0, |c| c.values.len());
            for e in 0..count {
                let cells: Vec<String> = answer
                    .results
                    .iter()
                    .map(|c| match c.statuses.get(e).map(|s| status_name(*s)) {
                        Some("PRESENT") | None => value_cell(&c.values[e]),
                        Some(other) => format!("({other})"),
                    })
                    .collect();
                print_line(cells.join("\t"))?;
            }
        }
    }
    Ok(())
}

async fn stats(
    req: pb::FeatureStatsRequest,
    endpoint: &Endpoint,
) -> anyhow::Result<pb::FeatureStatsResponse> {
    Ok(client(endpoint)
        .await?
        .get_stats(req)
        .await
        .map_err(status)?
        .into_inner())
}

/// A time flag's value, in microseconds.
fn time(flag: &str, text: Option<String>) -> anyhow::Result<Option<i64>> {
    text.map(|t| {
        parse_timestamp(&t)
            .ok_or_else(|| anyhow!("--{flag}: `{t}` is not a time (RFC 3339 or epoch seconds)"))
    })
    .transpose()
}

/// `START..END` (END may be empty: now).
fn window_arg(flag: &str, text: &str) -> anyhow::Result<(i64, Option<i64>)> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| anyhow!("--{flag}: `{text}` is not START..END"))?;
    let start = time(flag, Some(start.to_string()))?.unwrap_or(0);
    let end = match end.trim() {
        "" => None,
        end => time(flag, Some(end.to_string()))?,
    };
    Ok((start, end))
}

fn print_stats(stats: &[pb::FeatureStats]) -> anyhow::Result<()> {
    print_line(format!(
        "{:<20} {:>8} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "feature", "count", "nulls", "mean", "std", "min", "max", "p50", "p90", "p99"
    ))?;
    for s in stats {
        let n = |x: f64| match s.numeric {
            0 => "-".to_string(),
            _ => format!("{x:.4}"),
        };
        print_line(format!(
            "{:<20} {:>8} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
            s.feature,
            s.count,
            s.nulls,
            n(s.mean),
            n(s.std),
            n(s.min),
            n(s.max),
            n(s.p50),
            n(s.p90),
            n(s.p99)
        ))?;
    }
    Ok(())
}

fn print_drift(answer: &pb::FeatureStatsResponse) -> anyhow::Result<()> {
    print_line(format!(
        "{:<20} {:>9} {:>9} {:>8} {:>8} {:>8}  drift",
        "feature", "z(mean)", "z(std)", "psi", "ks", "ks crit"
    ))?;
    for d in &answer.drift {
        print_line(format!(
            "{:<20} {:>9.3} {:>9.3} {:>8.4} {:>8.4} {:>8.4}  {}",
            d.feature,
            d.z_mean,
            d.z_std,
            d.psi,
            d.ks,
            d.ks_critical,
            if d.drifted { "DRIFT" } else { "ok" }
        ))?;
    }
    let drifted = answer.drift.iter().filter(|d| d.drifted).count();
    print_line(format!(
        "{drifted} of {} features drifted",
        answer.drift.len()
    ))?;
    Ok(())
}

async fn materialize(req: pb::MaterializeRequest, endpoint: &Endpoint) -> anyhow::Result<()> {
    let mut stream = client(endpoint)
        .await?
        .materialize(req)
        .await
        .map_err(status)?
        .into_inner();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} shards of views ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut per_view: std::collections::BTreeMap<String, u64> = Default::default();
    while let Some(part) = stream.message().await.map_err(|e| {
        bar.abandon();
        status(e).context(
            "the shards that finished keep what they made online; running it again is safe",
        )
    })? {
        bar.set_length(u64::from(part.total));
        bar.set_position(u64::from(part.done));
        *per_view.entry(part.feature_view).or_default() += part.values;
    }
    bar.finish_and_clear();
    for (view, values) in per_view {
        print_line(format!(
            "materialized `{view}`: {values} values made online"
        ))?;
    }
    Ok(())
}

async fn historical(
    req: pb::GetHistoricalFeaturesRequest,
    format: SetFormat,
    endpoint: &Endpoint,
) -> anyhow::Result<()> {
    let mut stream = client(endpoint)
        .await?
        .get_historical_features(req)
        .await
        .map_err(status)?
        .into_inner();
    let mut columns: Vec<String> = Vec::new();
    let mut writer = csv::Writer::from_writer(std::io::stdout());
    let mut count = 0usize;
    while let Some(chunk) = stream.message().await.map_err(status)? {
        if !chunk.columns.is_empty() {
            columns = chunk.columns;
            eprintln!(
                "log position {0} (re-read this set with --as-of-log {0})",
                chunk.log_position
            );
            if let SetFormat::Csv = format {
                writer.write_record(&columns)?;
            }
        }
        for row in chunk.rows {
            count += 1;
            match format {
                SetFormat::Csv => writer.write_record(row.values.iter().map(value_cell))?,
                SetFormat::Json => {
                    // (written by hand to keep the columns' order)
                    let fields: Vec<String> = columns
                        .iter()
                        .zip(row.values.iter().map(value_json))
                        .map(|(name, value)| format!("{}:{value}", json!(name)))
                        .collect();
                    print_line(format!("{{{}}}", fields.join(",")))?;
                }
            }
        }
    }
    writer.flush()?;
    eprintln!("{count} rows");
    Ok(())
}

fn definitions_json(defs: &pb::FeatureDefinitions) -> Value {
    let tags = |t: &std::collections::HashMap<String, String>| {
        let sorted: std::collections::BTreeMap<_, _> = t.iter().collect();
        json!(sorted)
    };
    let fields = |f: &[pb::FeatureField]| -> Vec<Value> {
        f.iter()
            .map(|f| json!({"name": f.name, "type": f.r#type}))
            .collect()
    };
    json!({
        "entities": defs.entities.iter().map(|e| json!({
            "name": e.name,
            "join_keys": e.join_keys.iter()
                .map(|k| json!({"name": k.name, "type": k.r#type})).collect::<Vec<_>>(),
            "description": e.description,
            "tags": tags(&e.tags),
            "version": e.version,
        })).collect::<Vec<_>>(),
        "feature_views": defs.feature_views.iter().map(|v| json!({
            "name": v.name,
            "entities": v.entities,
            "fields": fields(&v.fields),
            "ttl_seconds": v.ttl_seconds,
            "owner": v.owner,
            "description": v.description,
            "tags": tags(&v.tags),
            "transformation": v.transformation,
            "version": v.version,
            "history": v.history.iter().map(|h| json!({
                "version": h.version, "fields": fields(&h.fields), "ttl_seconds": h.ttl_seconds,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "feature_services": defs.feature_services.iter().map(|s| json!({
            "name": s.name,
            "features": s.features,
            "owner": s.owner,
            "description": s.description,
            "tags": tags(&s.tags),
            "version": s.version,
        })).collect::<Vec<_>>(),
    })
}
