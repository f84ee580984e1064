#!/usr/bin/env python3
"""The data of the feature-store benchmark, written once for quiver and for Feast.

  feature_data.py --out DIR [--rows 1000000] [--entities 100000] [--entity-rows 100000]
                  [--seed 7] [--days 30] [--end 2024-03-01T00:00:00Z] [--redis 127.0.0.1:6379]

One feature view, `user_stats`, keyed by `user_id` (int64) with ten features (five float64,
three int64, one float32, one string) and a 7-day ttl. `--rows` rows over `--entities` users,
event times uniform over `--days` days ending at `--end` (default: now, to the hour, so that
the online values are inside the ttl when they are read), whole seconds; each row's created time
is its event time plus 0-600 s, so ties and late rows occur. `--entity-rows` entity rows for a
point-in-time read: users drawn uniformly from 1.05 × the users (so about 5% are unknown) at
times uniform over the same days.

Writes into DIR:
  rows.parquet, rows.csv      the feature rows (the same rows; CSV with epoch seconds)
  entities.parquet, entities.csv   the entity rows
  window                      the rows' first and last event second, for materialising
  quiver.yaml                 the definitions for `quiver features apply`
  feast/feature_store.yaml, feast/repo.py   a Feast repository: file (dask) offline store on
                              rows.parquet, Redis online store at --redis
Needs numpy, pandas, pyarrow.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

VIEW = "user_stats"
FLOAT64 = [f"f{i}" for i in range(5)]
INT64 = ["n0", "n1", "n2"]
FLOAT32 = ["r0"]
STRING = ["s0"]
FEATURES = FLOAT64 + INT64 + FLOAT32 + STRING
TTL_DAYS = 7


def feature_rows(rng: np.random.Generator, rows: int, entities: int, end: int, days: int) -> pd.DataFrame:
    event = rng.integers(end - days * 86_400, end, rows)
    frame = {
        "user_id": rng.integers(1, entities + 1, rows, dtype=np.int64),
        "event_timestamp": pd.to_datetime(event, unit="s", utc=True),
        "created_timestamp": pd.to_datetime(event + rng.integers(0, 601, rows), unit="s", utc=True),
    }
    for i, name in enumerate(FLOAT64):
        frame[name] = np.round(rng.normal(i, 1.0 + i, rows), 6)
    for i, name in enumerate(INT64):
        frame[name] = rng.integers(0, 1000 * (i + 1), rows, dtype=np.int64)
    frame["r0"] = rng.random(rows, dtype=np.float32)
    frame["s0"] = pd.Series(rng.integers(0, 50, rows)).map(lambda v: f"segment-{v}")
    return pd.DataFrame(frame)


def entity_rows(rng: np.random.Generator, count: int, entities: int, end: int, days: int) -> pd.DataFrame:
    at = rng.integers(end - days * 86_400, end, count)
    return pd.DataFrame({
        "user_id": rng.integers(1, int(entities * 1.05) + 1, count, dtype=np.int64),
        "event_timestamp": pd.to_datetime(at, unit="s", utc=True),
    })


def write_csv(frame: pd.DataFrame, path: str) -> None:
    out = frame.copy()
    for column in ("event_timestamp", "created_timestamp"):
        if column in out:
            out[column] = out[column].astype("int64") // 10**9
    out.to_csv(path, index=False, float_format="%.9g")


QUIVER_YAML = f"""\
entities:
  - name: user
    join_keys: [user_id]
feature_views:
  - name: {VIEW}
    entities: [user]
    ttl: {TTL_DAYS}d
    schema:
      - {{name: user_id, dtype: Int64}}
""" + "".join(
    f"      - {{name: {name}, dtype: {dtype}}}\n"
    for names, dtype in ((FLOAT64, "Float64"), (INT64, "Int64"), (FLOAT32, "Float32"), (STRING, "String"))
    for name in names
)

FEAST_YAML = """\
project: bench
registry: {registry}
provider: local
online_store:
  type: redis
  connection_string: "{redis}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""

FEAST_REPO = '''\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
source = FileSource(
    path={path!r},
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)
{view} = FeatureView(
    name="{view}",
    entities=[user],
    ttl=timedelta(days={ttl}),
    schema=[{schema}],
    source=source,
    online=True,
)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--end", default=None, help="RFC 3339 (default: now, to the hour)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis", default="127.0.0.1:6379")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "feast"), exist_ok=True)
    rng = np.random.default_rng(args.seed)

    end = pd.Timestamp(args.end) if args.end else pd.Timestamp.now(tz="UTC").floor("h")
    end = int(end.timestamp())
    rows = feature_rows(rng, args.rows, args.entities, end, args.days)
    rows.to_parquet(os.path.join(out, "rows.parquet"), index=False)
    write_csv(rows, os.path.join(out, "rows.csv"))
    entities = entity_rows(rng, args.entity_rows, args.entities, end, args.days)
    entities.to_parquet(os.path.join(out, "entities.parquet"), index=False)
    write_csv(entities, os.path.join(out, "entities.csv"))

    with open(os.path.join(out, "window"), "w") as f:
        f.write(f"{end - args.days * 86_400} {end}\n")
    with open(os.path.join(out, "quiver.yaml"), "w") as f:
        f.write(QUIVER_YAML)
    with open(os.path.join(out, "feast", "feature_store.yaml"), "w") as f:
        f.write(FEAST_YAML.format(registry=os.path.join(out, "feast", "registry.db"), redis=args.redis))
    dtypes = {**{n: "Float64" for n in FLOAT64}, **{n: "Int64" for n in INT64},
              **{n: "Float32" for n in FLOAT32}, **{n: "String" for n in STRING}}
    schema = ", ".join(f'Field(name="{n}", dtype={dtypes[n]})' for n in FEATURES)
    with open(os.path.join(out, "feast", "repo.py"), "w") as f:
        f.write(FEAST_REPO.format(path=os.path.join(out, "rows.parquet"), view=VIEW, ttl=TTL_DAYS,
                                  schema=schema))


if __name__ == "__main__":
    main()
