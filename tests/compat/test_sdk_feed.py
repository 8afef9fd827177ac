"""The change feed and the admin view through ``sdk.Client`` / ``sdk.AsyncClient`` against a
real ``canopy standalone``: ``watch`` yields the collection's writes in order, resumes from a
token without loss or duplicate, and ``cluster_info`` describes the node and its channels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from standalone_process import StandaloneProcess

from sdk import AsyncClient, Client

pytestmark = pytest.mark.compat

DIM = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneProcess]:
    with StandaloneProcess(tmp_path_factory.mktemp("feed") / "data") as proc:
        yield proc


def write_some(client: Client, name: str) -> list[tuple[str, list[int]]]:
    """Inserts, an upsert and a delete; returns (op, pks) in the order they were acknowledged."""
    client.create_collection(name, dimension=DIM)
    done: list[tuple[str, list[int]]] = []
    for batch in range(3):
        ids = list(range(batch * 10, batch * 10 + 10))
        client.insert(name, [{"id": i, "vector": [float(i), 0.0, 0.0, 1.0]} for i in ids])
        done.append(("insert", ids))
    client.upsert(name, [{"id": 5, "vector": [5.0, 5.0, 0.0, 1.0]}])
    done.append(("upsert", [5]))
    client.delete(name, ids=[1, 2])
    done.append(("delete", [1, 2]))
    return done


def seen(change: Any) -> tuple[str, list[int]]:
    if change.op == "delete":
        return "delete", sorted(change.pks)
    return change.op, sorted(row["id"] for row in change.rows)


def test_watch_from_the_start_and_resume_from_a_token(server: StandaloneProcess) -> None:
    with Client(uri=server.uri) as client:
        expected = write_some(client, "feed_sync")
        watch = client.watch("feed_sync", since=0)
        changes = [next(watch) for _ in range(len(expected))]
        watch.close()
        assert [seen(c) for c in changes] == expected
        stamps = [c.ts for c in changes]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        # resume after the second change: exactly the rest, then a new write
        resumed = client.watch("feed_sync", since=changes[1].token)
        client.insert("feed_sync", [{"id": 99, "vector": [9.0, 9.0, 9.0, 9.0]}])
        rest = [seen(next(resumed)) for _ in range(len(expected) - 2 + 1)]
        resumed.close()
        assert rest == [*expected[2:], ("insert", [99])]


async def test_async_watch_and_cluster_info(server: StandaloneProcess) -> None:
    with Client(uri=server.uri) as client:
        expected = write_some(client, "feed_async")
    async with AsyncClient(uri=server.uri) as client:
        got = []
        watch = client.watch("feed_async", since=0)
        async for change in watch:
            got.append(seen(change))
            if len(got) == len(expected):
                break
        watch.close()
        assert got == expected
        info = await client.cluster_info()
    assert info["mode"] == "standalone"
    (node,) = info["nodes"]
    assert {"coordinator", "proxy", "streaming"} <= set(node["roles"])
    assert node["address"] == server.address
    assert sorted(ch["pchannel"] for ch in info["channels"]) == ["canopy-dml_0", "canopy-dml_1"]
    assert all(ch["wal"]["exists"] and ch["wal"]["bytes"] > 0 for ch in info["channels"])
    (mine,) = [c for c in info["collections"] if c["name"] == "feed_async"]
    assert mine["pchannels"] and mine["vchannels"]


def test_watching_an_unknown_collection_is_a_clear_error(server: StandaloneProcess) -> None:
    from sdk.feed import FeedError

    with Client(uri=server.uri) as client, pytest.raises(FeedError) as failure:
        next(client.watch("no_such_collection", since="now"))
    assert "no_such_collection" in str(failure.value)
