"""Canopy's Python SDK in one page: create a collection, insert columns, search, watch.

    bash scripts/run                       # canopy standalone on 127.0.0.1:19530
    python examples/quickstart.py          # from another terminal

Drops and recreates the collection it names (``--collection``, default ``quickstart``).
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa

from sdk import Client, DataType

DIM = 8


def create(client: Client, name: str) -> None:
    """A collection with an INT64 key, a title and an 8-d vector; indexed and loaded."""
    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("title", DataType.VARCHAR, max_length=64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index("vec", index_type="AUTOINDEX", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=index)


def insert(client: Client, name: str) -> np.ndarray:
    """100 rows as a dict of numpy columns, 100 more as an Arrow table; returns the vectors."""
    rng = np.random.default_rng(7)
    vectors = rng.random((200, DIM), dtype=np.float32)
    client.insert(
        name,
        {
            "id": np.arange(100, dtype=np.int64),
            "title": [f"doc {i}" for i in range(100)],
            "vec": vectors[:100],
        },
    )
    table = pa.table(
        {
            "id": pa.array(np.arange(100, 200, dtype=np.int64)),
            "title": [f"doc {i}" for i in range(100, 200)],
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors[100:].ravel()), DIM),
        }
    )
    client.insert(name, table)
    client.upsert(name, [{"id": 7, "title": "doc 7 (edited)", "vec": vectors[7].tolist()}])
    client.delete(name, ids=[199])
    return vectors


def search(client: Client, name: str, vectors: np.ndarray) -> None:
    """The same search three ways: pymilvus' hit dicts, numpy arrays, an Arrow table."""
    hits = client.search(name, data=vectors[:2], limit=3, output_fields=["title"])
    print("nearest to doc 0:", hits[0][0]["id"], repr(hits[0][0]["entity"]["title"]))
    ids, distances = client.search(name, data=vectors[:2], limit=3, output_type="numpy")
    print("numpy ids:", ids.tolist(), "distance[0][0]:", round(float(distances[0][0]), 4))
    table = client.search(
        name, data=vectors[7], limit=1, output_fields=["title"], output_type="arrow"
    )
    print("arrow columns:", table.column_names, "title:", table["title"][0].as_py())


def read(client: Client, name: str) -> None:
    """Reads see this client's own writes (Session consistency), no sleep or flush needed."""
    (count,) = client.query(name, filter="", output_fields=["count(*)"])
    print("count:", count["count(*)"])
    print("get 7:", client.get(name, ids=[7], output_fields=["title"]))


def watch(client: Client, name: str) -> None:
    """The first three changes of the collection: every change with a timestamp above its
    creation (``since=0`` means the same; either fails with FeedTruncated once the server
    truncated the WAL past the collection's first changes)."""
    created = client.describe_collection(name)["created_timestamp"]
    feed = client.watch(name, since=created)
    for _, change in zip(range(3), feed, strict=False):
        keys = [r["id"] for r in change.rows] if change.rows else change.pks
        print(f"change: {change.op} {len(keys)} row(s), first key {keys[0]}")
    feed.close()
    print("resume token:", change.token[:16] + "...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="http://127.0.0.1:19530")
    parser.add_argument("--collection", default="quickstart")
    args = parser.parse_args()
    with Client(uri=args.uri) as client:
        create(client, args.collection)
        vectors = insert(client, args.collection)
        search(client, args.collection, vectors)
        read(client, args.collection)
        watch(client, args.collection)
        nodes = client.cluster_info()["nodes"]
        print("cluster:", [(n["address"], sorted(n["roles"])) for n in nodes])


if __name__ == "__main__":
    main()
