"""Differential test: seeded random writes and reads sent to Canopy and to milvus-lite agree.

The generator and the comparison rules live in ``differential.py`` (its docstring lists what
the sequence leaves out because milvus-lite, not Milvus, differs, and the Canopy gaps it works
around). Canopy runs as a real ``canopy standalone`` process first, then as the shared
LocalCluster (coordinator, two proxies, two streaming nodes, two query nodes and a data node
that builds indexes and compacts, on etcd + SeaweedFS; reached through its second proxy);
milvus-lite runs as its own server process (``lite_server.py``). Each seed gets a fresh
collection on both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from differential import generate, hits_diff, rows_diff, run
from lite_server import lite_server
from pymilvus import MilvusClient
from standalone_process import StandaloneProcess

from integration.cluster import LocalCluster

pytestmark = [pytest.mark.compat, pytest.mark.timeout(300)]

SEEDS = [1, 2, 3]
STEPS = 40


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusClient]:
    with lite_server(tmp_path_factory.mktemp("lite")) as uri:
        client = MilvusClient(uri)
        yield client
        client.close()


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def canopy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MilvusClient]:
    if request.param == "standalone":
        with StandaloneProcess(tmp_path_factory.mktemp("canopy") / "data") as proc:
            client = MilvusClient(proc.uri)
            yield client
            client.close()
        return
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    proxy = cluster.node(cluster.names("proxy")[-1])  # the second proxy: not only proxy 0
    client = MilvusClient(f"http://{proxy.address}")
    yield client
    client.close()


def test_generator_is_seeded_and_covers_every_op() -> None:
    ops = generate(7, 400)
    assert [str(o) for o in ops] == [str(o) for o in generate(7, 400)]
    writes = {"insert", "upsert", "delete_ids", "delete_filter", "flush"}
    assert {o.kind for o in ops} == writes | {"query", "get", "count", "search"}


@pytest.mark.parametrize("seed", SEEDS)
def test_same_answers_as_milvus_lite(canopy: MilvusClient, lite: MilvusClient, seed: int) -> None:
    checked = run(canopy, lite, seed, generate(seed, STEPS))
    assert checked >= STEPS // 3


def _hit(pk: int, distance: float, **entity: object) -> dict[str, object]:
    return {"id": pk, "distance": distance, "entity": entity}


def test_rows_are_compared_by_pk_with_every_field() -> None:
    lite_rows = [{"id": 1, "price": 0.1, "meta": {"a": 1}}, {"id": 2, "price": 2.0, "meta": {}}]
    assert rows_diff(list(reversed(lite_rows)), lite_rows) is None
    assert rows_diff([{**lite_rows[0], "price": 0.1 + 1e-12}, lite_rows[1]], lite_rows) is None
    assert "only lite: [2]" in str(rows_diff(lite_rows[:1], lite_rows))
    assert "pk 2" in str(rows_diff([lite_rows[0], {**lite_rows[1], "meta": {"a": 1}}], lite_rows))
    assert rows_diff([{"id": 1, "flag": 1}], [{"id": 1, "flag": True}]) is not None
    assert rows_diff([{"id": 1, "meta": {"a": 1.0}}], [{"id": 1, "meta": {"a": 1}}]) is not None
    assert rows_diff([{"id": 1, "color": "red"}], [{"id": 1}]) is not None


def test_search_hits_tolerate_only_ties_at_the_kth_distance() -> None:
    lite_hits = [_hit(1, 0.5, n=1), _hit(2, 1.0, n=2), _hit(3, 2.0, n=3)]
    swapped_tie = [_hit(1, 0.5, n=1), _hit(2, 1.0, n=2), _hit(9, 2.0, n=9)]
    assert hits_diff(swapped_tie, lite_hits, limit=3) is None
    inner_swap = [_hit(1, 0.5, n=1), _hit(8, 1.0, n=8), _hit(3, 2.0, n=3)]
    assert "pks" in str(hits_diff(inner_swap, lite_hits, limit=3))
    assert "pks" in str(hits_diff(swapped_tie, lite_hits, limit=4))  # fewer than k: no tie
    off = [_hit(1, 0.5, n=1), _hit(2, 1.001, n=2), _hit(3, 2.0, n=3)]
    assert "distances" in str(hits_diff(off, lite_hits, limit=3))
    assert hits_diff([_hit(1, 0.5 * (1 + 1e-6), n=1)], lite_hits[:1], limit=1) is None
    assert "entity" in str(hits_diff([_hit(1, 0.5, n=7)], lite_hits[:1], limit=1))
    assert "hits" in str(hits_diff(lite_hits[:2], lite_hits, limit=3))
