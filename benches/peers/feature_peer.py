#!/usr/bin/env python3
"""Feast, and quiver through Python's gRPC client, on the data of feature_data.py.

  feature_peer.py feast-apply DIR
  feature_peer.py feast-materialize DIR
  feature_peer.py feast-historical DIR --out F.csv
  feature_peer.py online --peer feast|quiver DIR [--quiver 127.0.0.1:6334 --proto PROTO_DIR]
                  [--requests 2000] [--entities-per-request 100] [--clients 1] [--seconds 10]
  feature_peer.py compare A.csv B.csv
  feature_peer.py report RESULTS.jsonl

Each timed step prints one JSON line (`system`, `step`, numbers). Feast runs in this process
with its Python SDK, which is how Feast is used: `materialize` and `get_historical_features`
with the file (dask) offline store, `get_online_features(...).to_dict()` against Redis (the SDK
talks to Redis directly; there is no server hop). quiver's online requests go through grpcio to
`quiver.v1.Features/GetOnlineFeatures`, with stubs generated from PROTO_DIR at start-up, and the
response is read into a dict the same shape as Feast's.

`online`: each request asks for the ten features of `--entities-per-request` users drawn from
the users of the data (seeded, the same draws for both systems); 50 unmeasured warm-up requests,
then `--requests` timed one after another (p50, p99, QPS of one client); with `--clients N > 1`,
N processes each send requests back to back for `--seconds` and the line reports their total
QPS and the p99 over all their requests.

`compare`: two training sets (CSV with user_id, event_timestamp and the features) joined on
the entity row and compared value by value: rows only one of them holds, and values that agree,
differ, or are null in both. Exits non-zero when a value differs.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import pandas as pd

VIEW = "user_stats"
FEATURES = [f"f{i}" for i in range(5)] + ["n0", "n1", "n2", "r0", "s0"]
WARMUP = 50


def emit(**line) -> None:
    print(json.dumps(line), flush=True)


def feast_store(data: str):
    from feast import FeatureStore

    return FeatureStore(repo_path=os.path.join(data, "feast"))


def window(data: str) -> tuple[int, int]:
    with open(os.path.join(data, "window")) as f:
        start, end = f.read().split()
    return int(start), int(end)


def feast_apply(data: str) -> None:
    subprocess.run(["feast", "apply"], cwd=os.path.join(data, "feast"), check=True,
                   stdout=subprocess.DEVNULL)


def feast_materialize(data: str) -> None:
    from datetime import datetime, timezone

    store = feast_store(data)
    start, end = window(data)
    began = time.perf_counter()
    store.materialize(datetime.fromtimestamp(start - 1, timezone.utc),
                      datetime.fromtimestamp(end + 1, timezone.utc))
    seconds = time.perf_counter() - began
    rows = pd.read_parquet(os.path.join(data, "rows.parquet"), columns=["user_id"])
    emit(system="feast", step="materialize", seconds=round(seconds, 3), rows=len(rows),
         rows_per_s=round(len(rows) / seconds))


def feast_historical(data: str, out: str) -> None:
    store = feast_store(data)
    entities = pd.read_parquet(os.path.join(data, "entities.parquet"))
    began = time.perf_counter()
    frame = store.get_historical_features(
        entity_df=entities, features=[f"{VIEW}:{f}" for f in FEATURES]).to_df()
    seconds = time.perf_counter() - began
    emit(system="feast", step="historical", seconds=round(seconds, 3), rows=len(frame),
         rows_per_s=round(len(frame) / seconds))
    frame["event_timestamp"] = frame["event_timestamp"].astype("int64") // 10**9
    frame.to_csv(out, index=False, float_format="%.9g")


def user_draws(data: str, per_request: int, count: int, seed: int) -> list[list[int]]:
    users = np.unique(pd.read_parquet(os.path.join(data, "rows.parquet"), columns=["user_id"])
                      ["user_id"].to_numpy())
    rng = np.random.default_rng(seed)
    return [[int(u) for u in rng.choice(users, per_request, replace=False)] for _ in range(count)]


def feast_client(data: str) -> Callable[[list[int]], dict]:
    store = feast_store(data)
    refs = [f"{VIEW}:{f}" for f in FEATURES]

    def ask(users: list[int]) -> dict:
        return store.get_online_features(
            features=refs, entity_rows=[{"user_id": u} for u in users]).to_dict()

    return ask


def quiver_client(address: str, proto: str) -> Callable[[list[int]], dict]:
    import grpc
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="quiver-stubs-")
    files = [os.path.join("quiver", "v1", name) for name in ("common.proto", "features.proto")]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(["protoc", f"-I{proto}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *files])
    if code != 0:
        sys.exit(f"protoc failed on {proto}")
    sys.path.insert(0, out)
    from quiver.v1 import features_pb2 as pb
    from quiver.v1 import features_pb2_grpc as rpc

    stub = rpc.FeaturesStub(grpc.insecure_channel(address))
    refs = [f"{VIEW}:{f}" for f in FEATURES]

    def ask(users: list[int]) -> dict:
        request = pb.GetOnlineFeaturesRequest(features=refs)
        request.entities["user_id"].values.extend(pb.FeatureValue(int64_value=u) for u in users)
        answer = stub.GetOnlineFeatures(request)
        return {name: [getattr(v, v.WhichOneof("kind")) if v.WhichOneof("kind") else None
                       for v in column.values]
                for name, column in zip(answer.feature_names, answer.results)}

    return ask


def make_client(args) -> Callable[[list[int]], dict]:
    if args.peer == "feast":
        return feast_client(args.data)
    return quiver_client(args.quiver, args.proto)


def timed(ask: Callable[[list[int]], dict], draws: list[list[int]]) -> list[float]:
    latencies = []
    for users in draws:
        began = time.perf_counter()
        answer = ask(users)
        latencies.append(time.perf_counter() - began)
        if len(answer.get("f0", ())) != len(users):
            sys.exit(f"an answer without a value per user: {list(answer)[:3]}")
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def soak(args, seed: int, queue) -> None:
    ask = make_client(args)
    draws = user_draws(args.data, args.entities_per_request, 1000, seed)
    timed(ask, draws[:WARMUP])
    latencies, i = [], 0
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        latencies.extend(timed(ask, [draws[i % len(draws)]]))
        i += 1
    queue.put(latencies)


def online(args) -> None:
    if args.clients <= 1:
        ask = make_client(args)
        draws = user_draws(args.data, args.entities_per_request, WARMUP + args.requests, 11)
        timed(ask, draws[:WARMUP])
        began = time.perf_counter()
        latencies = timed(ask, draws[WARMUP:])
        seconds = time.perf_counter() - began
        qps = len(latencies) / seconds
    else:
        queue = multiprocessing.Queue()
        workers = [multiprocessing.Process(target=soak, args=(args, 100 + i, queue))
                   for i in range(args.clients)]
        for w in workers:
            w.start()
        latencies = []
        for _ in workers:
            latencies.extend(queue.get())
        for w in workers:
            w.join()
        qps = len(latencies) / args.seconds
    emit(system=args.peer if args.peer == "feast" else "quiver-grpc-python", step="online",
         clients=args.clients, entities_per_request=args.entities_per_request,
         features=len(FEATURES), requests=len(latencies),
         p50_ms=round(percentile(latencies, 50) * 1e3, 3),
         p99_ms=round(percentile(latencies, 99) * 1e3, 3), qps=round(qps, 1),
         entity_rows_per_s=round(qps * args.entities_per_request))


def training_set(path: str) -> pd.DataFrame:
    frame = pd.read_csv(path)
    at = frame["event_timestamp"]
    if at.dtype.kind not in "iu":
        frame["event_timestamp"] = pd.to_datetime(at, utc=True).astype("int64") // 10**9
    return frame.drop_duplicates(["user_id", "event_timestamp"])


def compare(a: str, b: str) -> None:
    """Rows both sets hold are compared value by value; rows only one holds are counted."""
    key = ["user_id", "event_timestamp"]
    joined = training_set(a).merge(training_set(b), on=key, how="outer", suffixes=("_a", "_b"),
                                   indicator=True)
    both = joined[joined["_merge"] == "both"]
    agree = differ = null = 0
    for name in FEATURES:
        x, y = both[f"{name}_a"], both[f"{name}_b"]
        both_null = x.isna() & y.isna()
        if x.dtype.kind in "fi" and y.dtype.kind in "fi":
            same = np.isclose(x, y, rtol=1e-6, atol=1e-9)
        else:
            same = x.astype(str) == y.astype(str)
        null += int(both_null.sum())
        agree += int((same & ~both_null).sum())
        differ += int((~same & ~both_null).sum())
    emit(step="compare", rows_in_both=len(both),
         rows_only_in_a=int((joined["_merge"] == "left_only").sum()),
         rows_only_in_b=int((joined["_merge"] == "right_only").sum()),
         values_agree=agree, values_differ=differ, null_in_both=null)
    if differ:
        sys.exit(1)


def report(path: str) -> None:
    """A markdown table of a run's JSON lines: each step's numbers, and quiver's ratio to Feast."""
    lines = [json.loads(line) for line in open(path) if line.startswith("{")]

    def pick(system: str, step: str, **having) -> list[dict]:
        return [l for l in lines if l.get("system") == system and l.get("step") == step
                and all(l.get(k) == v for k, v in having.items())]

    def median(rows: list[dict], field: str) -> float | None:
        values = sorted(r[field] for r in rows)
        return values[len(values) // 2] if values else None

    print("| measure | quiver | Feast | ratio (quiver's advantage) |")
    print("|---|---:|---:|---:|")

    def row(label: str, ours, theirs, lower_is_better: bool) -> None:
        if ours is None or theirs is None:
            return
        ratio = theirs / ours if lower_is_better else ours / theirs
        print(f"| {label} | {ours:,} | {theirs:,} | {ratio:.1f}x |")

    for step in ("materialize", "historical"):
        ours, theirs = pick("quiver", step), pick("feast", step)
        row(f"{step}: seconds", median(ours, "seconds"), median(theirs, "seconds"), True)
        row(f"{step}: rows/s", median(ours, "rows_per_s"), median(theirs, "rows_per_s"), False)
    clients = sorted({l["clients"] for l in lines if l.get("step") == "online"})
    for system, how in (("quiver-grpc-python", "Python gRPC client"),
                        ("quiver-grpc-rust", "Rust gRPC client")):
        for n in clients:
            ours, theirs = pick(system, "online", clients=n), pick("feast", "online", clients=n)
            for field, lower in (("p50_ms", True), ("p99_ms", True), ("qps", False)):
                row(f"online, {n} client(s), quiver's {how}: {field}", median(ours, field),
                    median(theirs, field), lower)
    for l in pick("quiver-in-node", "online") + pick("quiver-in-node", "historical") \
            + pick("quiver", "push") + pick("quiver-in-node", "write"):
        numbers = ", ".join(f"{k} {v}" for k, v in l.items() if k not in ("system", "step"))
        print(f"| {l['system']} {l['step']}: {numbers} | | | |")
    for l in [l for l in lines if l.get("step") == "compare"]:
        numbers = ", ".join(f"{k} {v}" for k, v in l.items() if k != "step")
        print(f"| training sets compared (a = quiver, b = Feast): {numbers} | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("feast-apply", "feast-materialize", "feast-historical"):
        step = sub.add_parser(name)
        step.add_argument("data")
        if name == "feast-historical":
            step.add_argument("--out", required=True)
    on = sub.add_parser("online")
    on.add_argument("data")
    on.add_argument("--peer", choices=["feast", "quiver"], required=True)
    on.add_argument("--quiver", default="127.0.0.1:6334")
    on.add_argument("--proto", default=os.path.join(os.path.dirname(__file__), "../../proto/proto"))
    on.add_argument("--requests", type=int, default=2000)
    on.add_argument("--entities-per-request", type=int, default=100)
    on.add_argument("--clients", type=int, default=1)
    on.add_argument("--seconds", type=float, default=10.0)
    cmp = sub.add_parser("compare")
    cmp.add_argument("a")
    cmp.add_argument("b")
    sub.add_parser("report").add_argument("results")
    args = parser.parse_args()
    if args.command == "feast-apply":
        feast_apply(args.data)
    elif args.command == "feast-materialize":
        feast_materialize(args.data)
    elif args.command == "feast-historical":
        feast_historical(args.data, args.out)
    elif args.command == "online":
        online(args)
    elif args.command == "compare":
        compare(args.a, args.b)
    else:
        report(args.results)


if __name__ == "__main__":
    main()
