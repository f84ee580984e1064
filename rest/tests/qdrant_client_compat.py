"""quiver's REST API driven by the real `qdrant-client` package, as a Qdrant user would.

Run against a server's REST address: `python qdrant_client_compat.py http://127.0.0.1:6333`.
Every check raises on a mismatch; the last line printed is `passed N checks`. Raw HTTP (httpx,
which qdrant-client depends on) checks that bad input gets a 400 naming the field and changes
nothing.
"""

import sys
import uuid

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

URL = sys.argv[1]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


client = QdrantClient(url=URL, timeout=30)
name = "qc_docs"
if client.collection_exists(name):
    client.delete_collection(name)
check(not client.collection_exists(name), "collection absent at start")

client.create_collection(
    name,
    vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE),
    hnsw_config=models.HnswConfigDiff(m=16, ef_construct=100),
    shard_number=2,
)
check(client.collection_exists(name), "collection exists after create")
check(name in [c.name for c in client.get_collections().collections], "listed")
info = client.get_collection(name)
check(info.config.params.vectors.size == 4, f"size: {info.config.params.vectors}")
check(info.config.params.vectors.distance == models.Distance.COSINE, "distance")
check(info.config.hnsw_config.m == 16, "hnsw m")
check(info.config.params.shard_number == 2, "shard_number")

u = str(uuid.uuid4())
points = [
    models.PointStruct(id=1, vector=[0.1, 0.9, 0.0, 0.2], payload={"category": "ml", "year": 2021}),
    models.PointStruct(id=2, vector=[0.8, 0.1, 0.1, 0.0], payload={"category": "db", "year": 2019}),
    models.PointStruct(id=u, vector=[0.2, 0.8, 0.1, 0.1], payload={"category": "ml", "year": 2024}),
]
result = client.upsert(name, points=points, wait=True)
check(result.status == models.UpdateStatus.COMPLETED, f"upsert status {result}")
client.upload_points(
    name,
    points=[
        models.PointStruct(id=100 + i, vector=[-1.0 - i, 0.0, -0.5, 0.25], payload={"i": i, "category": "bulk"})
        for i in range(50)
    ],
    batch_size=16,
    wait=True,
)
check(client.count(name).count == 53, "count after upserts")
check(client.count(name, count_filter=models.Filter(must=[
    models.FieldCondition(key="category", match=models.MatchValue(value="ml"))])).count == 2, "filtered count")

got = client.retrieve(name, ids=[1, u, 999], with_payload=True, with_vectors=True)
check(sorted(str(p.id) for p in got) == sorted(["1", u]), f"retrieve {got}")
one = [p for p in got if p.id == 1][0]
check(one.payload == {"category": "ml", "year": 2021}, f"payload {one.payload}")
check(len(one.vector) == 4, "vector returned")

hits = client.query_points(name, query=[0.1, 0.9, 0.0, 0.1], limit=3, with_payload=True).points
check(hits[0].id == 1, f"nearest {hits}")
check(hits[0].score >= hits[1].score, "cosine scores best first")
ml = client.query_points(
    name,
    query=[0.1, 0.9, 0.0, 0.1],
    query_filter=models.Filter(must=[
        models.FieldCondition(key="category", match=models.MatchValue(value="ml")),
        models.FieldCondition(key="year", range=models.Range(gte=2022)),
    ]),
    limit=10,
).points
check([p.id for p in ml] == [u], f"filtered query {ml}")
anyof = client.query_points(
    name, query=[0.1, 0.9, 0.0, 0.1], limit=10,
    query_filter=models.Filter(must=[models.FieldCondition(key="category", match=models.MatchAny(any=["ml", "db"]))]),
).points
check(len(anyof) == 3, f"match any {anyof}")
notml = client.query_points(
    name, query=[0.1, 0.9, 0.0, 0.1], limit=100,
    query_filter=models.Filter(must_not=[models.FieldCondition(key="category", match=models.MatchValue(value="ml"))]),
).points
check(len(notml) == 51, f"must_not {len(notml)}")
by_id = client.query_points(name, query=1, limit=2).points
check(1 not in [p.id for p in by_id] and by_id[0].id == u, f"query by id {by_id}")
paged = client.query_points(name, query=[0.1, 0.9, 0.0, 0.1], limit=2, offset=1).points
check([p.id for p in paged] == [p.id for p in hits[1:3]], "offset")
high = client.query_points(name, query=[0.1, 0.9, 0.0, 0.1], limit=10, score_threshold=0.9).points
check(all(p.score >= 0.9 for p in high) and len(high) >= 1, f"score threshold {high}")
batch = client.query_batch_points(name, requests=[
    models.QueryRequest(query=[0.1, 0.9, 0.0, 0.1], limit=1),
    models.QueryRequest(query=[0.8, 0.1, 0.1, 0.0], limit=1),
])
check([r.points[0].id for r in batch] == [1, 2], f"query batch {batch}")

# a payload index created after the points: listed at once, built in the background
client.create_payload_index(name, field_name="category", field_schema=models.PayloadSchemaType.KEYWORD, wait=True)
schema = client.get_collection(name).payload_schema
check(schema["category"].data_type == models.PayloadSchemaType.KEYWORD, f"payload_schema {schema}")
check(client.count(name, count_filter=models.Filter(must=[
    models.FieldCondition(key="category", match=models.MatchValue(value="ml"))])).count == 2, "count with the index")
client.delete_payload_index(name, field_name="category", wait=True)
check("category" not in client.get_collection(name).payload_schema, "payload index dropped")

# aliases: create, use, swap atomically to another collection, delete
client.create_collection("qc_green", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
client.upsert("qc_green", points=[models.PointStruct(id=77, vector=[0.1, 0.9, 0.0, 0.1], payload={})], wait=True)
client.update_collection_aliases(change_aliases_operations=[
    models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=name, alias_name="qc_live"))])
check(client.count("qc_live").count == 53, "count through an alias")
check([a.alias_name for a in client.get_collection_aliases(name).aliases] == ["qc_live"], "collection aliases")
client.update_collection_aliases(change_aliases_operations=[
    models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="qc_live")),
    models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="qc_green", alias_name="qc_live")),
])
check(client.query_points("qc_live", query=[0.1, 0.9, 0.0, 0.1], limit=1).points[0].id == 77, "alias swapped")
check({(a.alias_name, a.collection_name) for a in client.get_aliases().aliases} == {("qc_live", "qc_green")}, "aliases")
try:
    client.update_collection_aliases(change_aliases_operations=[
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="qc_live")),
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="qc_missing", alias_name="qc_live")),
    ])
    check(False, "an alias to a missing collection was accepted")
except UnexpectedResponse as e:
    check(e.status_code == 404, f"alias to a missing collection: {e.status_code}")
check(client.count("qc_live").count == 1, "a refused alias change changed nothing")
client.delete_collection("qc_green")
check(client.get_aliases().aliases == [], "a dropped collection's aliases go with it")

# scroll pages through every point in id order
seen, offset = [], None
while True:
    page, offset = client.scroll(name, limit=7, offset=offset, with_payload=False)
    seen.extend(p.id for p in page)
    if offset is None:
        break
check(len(seen) == 53 and len(set(map(str, seen))) == 53, f"scroll saw {len(seen)}")
nums = [i for i in seen if isinstance(i, int)]
check(nums == sorted(nums), "scroll in id order")

# payload changes without resending vectors
client.set_payload(name, payload={"reviewed": True}, points=[1, 2], wait=True)
check(client.retrieve(name, ids=[1])[0].payload == {"category": "ml", "year": 2021, "reviewed": True}, "set_payload")
client.overwrite_payload(name, payload={"only": 1}, points=[2], wait=True)
check(client.retrieve(name, ids=[2])[0].payload == {"only": 1}, "overwrite_payload")
client.delete_payload(name, keys=["year"], points=models.FilterSelector(filter=models.Filter(must=[
    models.FieldCondition(key="category", match=models.MatchValue(value="ml"))])), wait=True)
check("year" not in client.retrieve(name, ids=[u])[0].payload, "delete_payload by filter")
client.clear_payload(name, points_selector=[1], wait=True)
check(client.retrieve(name, ids=[1])[0].payload == {}, "clear_payload")
client.update_vectors(name, points=[models.PointVectors(id=2, vector=[0.0, 0.0, 1.0, 0.0])], wait=True)
near = client.query_points(name, query=[0.0, 0.0, 1.0, 0.0], limit=1).points
check(near[0].id == 2, f"update_vectors {near}")

# deletes
client.delete(name, points_selector=models.PointIdsList(points=[100, 101]), wait=True)
client.delete(name, points_selector=models.FilterSelector(filter=models.Filter(must=[
    models.FieldCondition(key="i", range=models.Range(gte=40))])), wait=True)
check(client.count(name).count == 53 - 2 - 10, "deletes by ids and filter")

# bad input: a clear error, nothing changed
try:
    client.upsert(name, points=[models.PointStruct(id=7, vector=[1.0, 2.0], payload={})])
    check(False, "a wrong-sized vector was accepted")
except UnexpectedResponse as e:
    check(e.status_code == 400, f"status {e.status_code}")
    check("points[0].vector" in str(e.content), f"message {e.content}")
check(client.count(name).count == 41, "the refused upsert changed nothing")

http = httpx.Client(base_url=URL, timeout=30)
bad = http.post(f"/collections/{name}/points/query", json={"query": [1, 2, 3, 4], "filter": {"must": [{"has_id": [1]}]}})
check(bad.status_code == 400 and "filter.must[0].has_id" in bad.text, f"has_id refused: {bad.text}")
bad = http.put(f"/collections/{name}/points", content=b"{not json")
check(bad.status_code == 400 and "body" in bad.text, f"bad JSON: {bad.text}")
missing = http.post("/collections/nope/points/count", json={})
check(missing.status_code == 404 and "nope" in missing.text, f"unknown collection: {missing.text}")
dup = http.put(f"/collections/{name}", json={"vectors": {"size": 4, "distance": "Cosine"}})
check(dup.status_code == 409, f"create twice: {dup.status_code} {dup.text}")
euclid = http.put("/collections/qc_flat", json={"vectors": {"size": 2, "distance": "Manhattan"}})
check(euclid.status_code == 400 and "vectors.distance" in euclid.text, f"distance: {euclid.text}")
check(http.get("/openapi.json").json()["openapi"].startswith("3."), "openapi served")

# a flat (m = 0) Euclid collection: scores are distances, lower first
client.create_collection("qc_flat", vectors_config=models.VectorParams(size=2, distance=models.Distance.EUCLID),
                         hnsw_config=models.HnswConfigDiff(m=0))
client.upsert("qc_flat", points=[models.PointStruct(id=i, vector=[float(i), 0.0]) for i in range(5)], wait=True)
flat = client.query_points("qc_flat", query=[0.2, 0.0], limit=3).points
check([p.id for p in flat] == [0, 1, 2] and flat[0].score <= flat[1].score, f"euclid {flat}")
check(client.get_collection("qc_flat").config.hnsw_config.m == 0, "flat reported as m = 0")

# scalar int8 quantization, as qdrant-client asks for it: reported back, searched with rescoring
client.create_collection("qc_int8", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
                         quantization_config=models.ScalarQuantization(
                             scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99,
                                                                    always_ram=True)))
q = client.get_collection("qc_int8").config.quantization_config
check(q is not None and q.scalar.type == models.ScalarType.INT8, f"int8 reported: {q}")
client.upsert("qc_int8", points=[models.PointStruct(id=i, vector=[float((i * 7 + j) % 11) + 1.0 for j in range(8)])
                                 for i in range(60)], wait=True)
params = models.SearchParams(quantization=models.QuantizationSearchParams(rescore=True, oversampling=2.0))
hits = client.query_points("qc_int8", query=[float((5 * 7 + j) % 11) + 1.0 for j in range(8)], limit=3,
                           search_params=params).points
check(hits[0].id == 5 and abs(hits[0].score - 1.0) < 1e-5, f"int8 search {hits}")
bad = http.put("/collections/qc_pq", json={"vectors": {"size": 8, "distance": "Dot"},
                                          "quantization_config": {"product": {"compression": "x16"}}})
check(bad.status_code == 400 and "quantization_config" in bad.text, f"product quantization refused: {bad.text}")
bad = http.post("/collections/qc_int8/points/search",
                json={"vector": [1.0] * 8, "limit": 3, "params": {"quantization": {"oversampling": 0.2}}})
check(bad.status_code == 400 and "oversampling" in bad.text, f"oversampling refused: {bad.text}")
check(client.delete_collection("qc_int8"), "delete int8 collection")

# snapshots: created, listed, downloaded (quiver's own file: JSON lines), deleted
snap = client.create_snapshot(name)
check(snap.name.endswith(".snapshot") and snap.size > 0 and snap.creation_time, f"create_snapshot {snap}")
check([s.name for s in client.list_snapshots(name)] == [snap.name], "list_snapshots")
got = http.get(f"/collections/{name}/snapshots/{snap.name}")
lines = got.content.splitlines()
check(got.status_code == 200 and len(got.content) == snap.size, f"snapshot download {got.status_code}")
check(b'"quiver_snapshot":1' in lines[0] and b'"points":41' in lines[-1], f"snapshot file {lines[0][:80]} {lines[-1]}")
bad = http.delete(f"/collections/{name}/snapshots/..%2Fx")
check(bad.status_code in (400, 404), f"bad snapshot name: {bad.status_code} {bad.text}")
check(client.delete_snapshot(name, snap.name), "delete_snapshot")
check(client.list_snapshots(name) == [], "snapshot deleted")

check(client.delete_collection("qc_flat"), "delete_collection")
check(client.delete_collection(name), "delete_collection")
check(not client.collection_exists(name), "collection gone")
print(f"passed {checks} checks")
