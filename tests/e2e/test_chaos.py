"""Chaos end-to-end: a LocalCluster (coordinator, 2 proxies, 2 streaming, 2 query, 1 data node,
its own etcd and SeaweedFS) under a seeded mixed insert/delete/search/query load, while each role
is SIGKILLed and restarted in turn, etcd is restarted and the S3 server is paused for 30 s.

Only the faulted process is restarted (as Kubernetes would); every other role must recover by
itself. After each fault the test waits until every proxy serves again (an acknowledged write
and a verified Strong search) and reports that recovery time. At the end: no role died, every
acknowledged write is present exactly once, every acknowledged delete is applied, nothing
unknown exists, count(*) agrees, and no successful read ever returned a wrong answer (errors
during outages are fine). The table of recovery times goes to stdout and ``chaos-report.txt`` in
the test's tmp dir. ``CANOPY_CHAOS_SEED`` overrides the seed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chaos_load import (
    ANCHORS,
    COLLECTION,
    PROBE_PK0,
    WORKLOAD_PK0,
    LoadThread,
    Oracle,
    anchor_vectors,
    create_collection,
    final_violations,
    probe,
    read_all,
    scan_ranges,
)
from pymilvus import MilvusClient

from cluster.coordinator.channels import CHANNELS_PREFIX, ChannelRecord
from cluster.coordinator.sessions import SessionInfo, role_prefix
from integration.cluster import LocalCluster
from integration.processes import log_tail
from integration.services import start_etcd, stop
from woodpecker.meta import open_meta_store

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SEED = int(os.environ.get("CANOPY_CHAOS_SEED", "6006"))
RECOVERY_TIMEOUT = 60.0
S3_PAUSE = 30.0
STEADY = 3.0  # seconds of load on a healthy cluster before each fault
FINAL_TIMEOUT = 60.0


@dataclass
class Outcome:
    """One fault: how long it lasted, when every proxy served again, load errors meanwhile."""

    fault: str
    lasted: float  # from the fault until it was removed (restart done, SIGCONT)
    recovered: float  # from the fault until every proxy served again
    errors: Counter[str]  # failed load calls per op, from the fault until recovered

    @property
    def after_end(self) -> float:
        return self.recovered - self.lasted


# Short enough that the etcd restart (~2 s of outage: shutdown, then a leader election) outlasts
# it: the nodes' sessions turn unconfirmed (streaming nodes refuse work) and must be confirmed
# again by themselves, since etcd keeps leases across a restart (cluster/coordinator/sessions.py).
# A killed node's work moves within one ttl.
SESSION_TTL = 2.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Its own etcd and SeaweedFS: the test restarts one and pauses the other."""
    with LocalCluster(
        proxies=2,
        streaming_nodes=2,
        query_nodes=2,
        data_nodes=1,
        channels=2,
        session_ttl=SESSION_TTL,
        work_dir=tmp_path / "cluster",
    ) as c:
        yield c


# --- faults --------------------------------------------------------------------------------------


def kill_and_restart(name: str) -> Callable[[LocalCluster], str]:
    def fault(cluster: LocalCluster) -> str:
        cluster.kill(name)
        cluster.start_node(name)
        return f"SIGKILL {name}"

    return fault


def channel_owner(cluster: LocalCluster) -> str:
    """The streaming node owning the first physical channel (from etcd), by LocalCluster name."""

    async def read() -> str:
        meta = open_meta_store(cluster.meta_uri)
        try:
            sessions = {
                (info := SessionInfo.decode(kv.value)).node_id: info.address
                for kv in await meta.range(role_prefix("streaming"))
            }
            by_address = {n.address: n.name for n in cluster.nodes.values()}
            for kv in sorted(await meta.range(CHANNELS_PREFIX), key=lambda kv: kv.key):
                owner = ChannelRecord.decode(kv.value).owner
                if (name := by_address.get(sessions.get(owner, ""))) is not None:
                    return name
            raise AssertionError("no channel has a live streaming owner")
        finally:
            await meta.close()

    return asyncio.run(read())


def kill_channel_owner(cluster: LocalCluster) -> str:
    """SIGKILL (and restart) a streaming node that owns a channel right now."""
    return kill_and_restart(channel_owner(cluster))(cluster)


def restart_etcd(cluster: LocalCluster) -> str:
    old = cluster.etcd
    assert old is not None and old.data_dir is not None
    stop(old)
    cluster.etcd = start_etcd(old.data_dir, port=old.port, peer_port=old.peer_port)
    return "restart etcd"


def pause_s3(cluster: LocalCluster) -> str:
    """SIGSTOP SeaweedFS' process group (it runs in its own) for S3_PAUSE seconds."""
    assert cluster.s3 is not None and cluster.s3.pid is not None
    os.killpg(cluster.s3.pid, signal.SIGSTOP)
    try:
        time.sleep(S3_PAUSE)
    finally:
        os.killpg(cluster.s3.pid, signal.SIGCONT)
    return f"SIGSTOP S3 {S3_PAUSE:.0f}s"


# In order; each returns what it did (the report's row label).
FAULTS: list[Callable[[LocalCluster], str]] = [
    kill_and_restart("coordinator"),
    kill_and_restart("proxy-1"),
    kill_channel_owner,
    kill_and_restart("query-0"),
    kill_and_restart("data-0"),
    restart_etcd,
    pause_s3,
]


# --- checks --------------------------------------------------------------------------------------


def logs(cluster: LocalCluster, focus: str | None = None) -> str:
    """Log tails: ``focus`` (or every node) in full, the other nodes' last lines."""
    parts = []
    for node in cluster.nodes.values():
        lines = 40 if focus in (None, node.name) else 8
        parts.append(log_tail(node.log_path, lines))
    return "\n".join(parts)


def check_alive(cluster: LocalCluster) -> None:
    """Fail if any role process exited by itself."""
    for node in cluster.nodes.values():
        if node.proc is None or node.proc.poll() is not None:
            code = None if node.proc is None else node.proc.returncode
            pytest.fail(f"{node.name} is not running (exit code {code})\n{log_tail(node.log_path)}")


def wait_serving(
    cluster: LocalCluster,
    clients: list[MilvusClient],
    oracle: Oracle,
    probe_pks: Iterator[int],
    rng: random.Random,
    fault: str,
) -> float:
    """Until a probe (write + verified Strong search) succeeds through every proxy; returns the
    ``time.monotonic()`` of the last first success."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    pending = set(range(len(clients)))
    while True:
        for i in sorted(pending):
            if probe(clients[i], oracle, next(probe_pks), rng):
                pending.discard(i)
        if not pending:
            return time.monotonic()
        check_alive(cluster)
        if time.monotonic() > deadline:
            with oracle.lock:
                recent = [f"{op}: {e}" for _, op, e in oracle.errors[-5:]]
            pytest.fail(
                f"after {fault}: proxies {sorted(pending)} did not serve within "
                f"{RECOVERY_TIMEOUT:.0f}s; last errors: {recent}\n"
                f"{logs(cluster, next((n for n in fault.split() if n in cluster.nodes), None))}"
            )
        time.sleep(0.2)


def final_state(
    cluster: LocalCluster, client: MilvusClient, oracle: Oracle, next_workload: int, next_probe: int
) -> None:
    """Check the final rows against the oracle and count(*). Errors are retried until
    FINAL_TIMEOUT; wrong answers fail at once."""
    deadline = time.monotonic() + FINAL_TIMEOUT
    while True:
        try:
            seen = read_all(client, scan_ranges(next_workload, next_probe))
            client.flush(COLLECTION, timeout=30)
            counted = client.query(
                COLLECTION,
                filter="",
                output_fields=["count(*)"],
                consistency_level="Strong",
                timeout=30,
            )[0]["count(*)"]
            break
        except AssertionError:
            raise
        except Exception as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"the final reads kept failing: {exc}\n{logs(cluster)}")
            time.sleep(1.0)
    issued = set(range(ANCHORS)) | set(range(WORKLOAD_PK0, next_workload))
    issued |= set(range(PROBE_PK0, next_probe))
    problems = final_violations(oracle, seen, issued)
    if counted != len(seen):
        problems.append(f"count(*) {counted} != {len(seen)} distinct pks present")
    assert problems == [], "\n".join(problems)


# --- the test ------------------------------------------------------------------------------------


def report(outcomes: list[Outcome], oracle: Oracle, path: Path) -> str:
    lines = [
        f"chaos report (seed {SEED})",
        f"{'fault':<22}{'lasted s':>10}{'recovered s':>13}{'after end s':>13}{'load errors':>13}"
        "  (by op)",
    ]
    lines += [
        f"{o.fault:<22}{o.lasted:>10.1f}{o.recovered:>13.1f}{o.after_end:>13.1f}"
        f"{o.errors.total():>13}  {dict(sorted(o.errors.items()))}"
        for o in outcomes
    ]
    with oracle.lock:
        lines.append(
            f"ops ok {dict(oracle.ops)}; errors {len(oracle.errors)}; wrong {len(oracle.wrong)}; "
            f"acked {len(oracle.acked)}, deleted {len(oracle.deleted)}, maybe-inserted "
            f"{len(oracle.maybe_inserted)}, maybe-deleted {len(oracle.maybe_deleted)}"
        )
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    print("\n" + text)
    return text


def test_chaos_every_role_recovers_without_losing_or_duplicating_writes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    anchors = anchor_vectors(SEED)
    oracle = Oracle(anchors)
    load_clients = [MilvusClient(uri=uri) for uri in cluster.proxy_uris]
    probe_clients = [MilvusClient(uri=uri) for uri in cluster.proxy_uris]
    setup = load_clients[0]
    create_collection(setup)
    setup.insert(COLLECTION, [{"pk": pk, "batch": -1, "vec": vec} for pk, vec in anchors.items()])
    setup.flush(COLLECTION)
    for pk in anchors:  # before any fault every anchor finds itself
        assert oracle.search(setup, pk), oracle.errors
    assert oracle.wrong == []

    load = LoadThread(load_clients, oracle, SEED)
    probe_pks = itertools.count(PROBE_PK0)
    outcomes: list[Outcome] = []
    load.start()
    try:
        for fault in FAULTS:
            time.sleep(STEADY)
            started = time.monotonic()
            name = fault(cluster)
            ended = time.monotonic()
            served = wait_serving(cluster, probe_clients, oracle, probe_pks, rng, name)
            errors = oracle.errors_between(started, served)
            outcomes.append(Outcome(name, ended - started, served - started, errors))
            check_alive(cluster)
        time.sleep(STEADY)
    finally:
        try:
            load.stop()
        finally:
            report(outcomes, oracle, tmp_path / "chaos-report.txt")

    cluster.wait_ready(FINAL_TIMEOUT)
    check_alive(cluster)
    final_state(cluster, probe_clients[0], oracle, load.next_pk, next(probe_pks))
    assert oracle.wrong == [], "\n".join(oracle.wrong)
    assert oracle.ops["insert"] > 0 and oracle.ops["delete"] > 0, dict(oracle.ops)
