"""``canopy storage-check`` on in-process stores, and the WAL's startup fencing-mode log line."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
from store_fakes import IgnoresConditions

from cluster.storage_check import (
    MODE_CONDITIONAL,
    StorageReport,
    check_storage,
    format_report,
    main,
    register,
)
from woodpecker import LogStore, WalConfig
from woodpecker.errors import StorageError
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore
from woodpecker.objectstore.base import ObjectInfo

BASIC = ["put", "get", "range get", "head", "list", "delete", "cleanup"]


class RejectsConditions(IgnoresConditions):
    """A store that answers any conditional PUT with an error (501 Not Implemented)."""

    async def put(self, key, data, *, if_none_match=None, if_match=None) -> ObjectInfo:  # type: ignore[no-untyped-def]
        if if_none_match or if_match:
            raise StorageError(f"s3 put {key!r}: NotImplemented: conditional writes")
        return await self.inner.put(key, data)


def results(report: StorageReport) -> dict[str, str]:
    return {c.name: c.result for c in report.checks}


async def scratch_left(store: MemoryObjectStore) -> list[str]:
    return [o.key async for o in store.list("_storage_check/")]


async def test_memory_store_passes_every_check_in_conditional_mode() -> None:
    store = MemoryObjectStore()
    report = await check_storage(store)
    assert all(results(report)[name] == "ok" for name in BASIC)
    assert results(report)["If-None-Match: * (existing key)"] == "ok"
    assert results(report)["If-Match (stale etag)"] == "ok"
    assert report.conditional_writes is True and report.if_match is True
    assert report.mode == MODE_CONDITIONAL
    assert report.exit_code == 0 and report.fix is None
    assert await scratch_left(store) == []
    text = format_report(report)
    assert "WAL fencing mode: conditional writes (If-None-Match/If-Match)" in text
    assert "RESULT: usable (exit 0)" in text


async def test_store_ignoring_conditions_is_reported_as_lock_fallback() -> None:
    inner = MemoryObjectStore()
    report = await check_storage(IgnoresConditions(inner), MemoryMetaStore(), lock_ttl=3.0)
    assert report.conditional_writes is False and report.if_match is False
    assert report.mode == "meta-store lock (etcd lease; wal.lock_ttl=3s)"
    assert results(report)["If-None-Match: * (existing key)"] == "-"
    assert results(report)["meta lease lock"] == "ok"
    assert report.exit_code == 0  # usable: the WAL falls back to the lease lock
    assert any("If-Match is ignored" in w for w in report.warnings)
    assert "wal.lock_ttl (3s)" in report.mode_meaning
    assert await scratch_left(inner) == []


async def test_lock_fallback_without_meta_warns_that_the_lock_was_not_checked() -> None:
    report = await check_storage(IgnoresConditions(MemoryObjectStore()))
    assert report.exit_code == 0
    assert "meta lease lock" not in results(report)
    assert any("--meta" in w for w in report.warnings)


async def test_store_rejecting_conditional_puts_is_not_usable() -> None:
    report = await check_storage(RejectsConditions(MemoryObjectStore()))
    assert results(report)["If-None-Match: * (new key)"] == "FAILED"
    assert report.conditional_writes is None and report.exit_code == 1
    assert report.fix is not None and "conditional PUTs" in report.fix


async def test_capability_record_is_compared_with_what_the_store_does(tmp_path: Path) -> None:
    meta = MemoryMetaStore()
    shared = MemoryObjectStore(f"storage-check-{tmp_path.name}")
    report = await check_storage(shared, meta)
    assert results(report)["WAL capability record"] == "-"  # nothing recorded yet
    wal = await LogStore.open(shared, meta, WalConfig())
    await wal.close()
    report = await check_storage(shared, meta)
    assert results(report)["WAL capability record"] == "ok"
    assert report.recorded is not None and report.recorded["conditional_writes"] is True
    # The same store (same URI) now ignoring conditions: the WAL would trust a missing fence.
    report = await check_storage(IgnoresConditions(shared), meta)
    assert results(report)["WAL capability record"] == "FAILED"
    assert report.exit_code == 1
    assert report.fix is not None and "NOT fenced" in report.fix


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``canopy ARGV`` through ``register`` on a fresh parser, as cluster.cli would run it."""
    parser = argparse.ArgumentParser(prog="canopy")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reads_the_stores_and_lock_ttl_from_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CANOPY_META", raising=False)
    monkeypatch.delenv("CANOPY_OBJECT_STORE", raising=False)
    config = tmp_path / "canopy.yaml"
    config.write_text(
        f"object_store: file://{tmp_path}/objects\n"
        f"meta: sqlite:///{tmp_path}/meta.db\n"
        "wal:\n  lock_ttl: 4.0\n"
    )
    code, out, _ = run_cli(["storage-check", "--config", str(config), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["usable"] is True
    assert report["object_store"] == f"file://{tmp_path}/objects"
    assert report["lock_ttl"] == 4.0
    assert {c["name"]: c["ok"] for c in report["checks"]}["meta lease lock"] is True
    assert report["mode"] == MODE_CONDITIONAL


def test_cli_table_output_and_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CANOPY_META", raising=False)
    monkeypatch.delenv("CANOPY_OBJECT_STORE", raising=False)
    code, out, _ = run_cli(["storage-check", "--object-store", "memory://"], capsys)
    assert code == 0
    assert "CHECK" in out and "If-Match (stale etag)" in out and "RESULT: usable" in out
    assert main([]) == 2
    assert "no object store" in capsys.readouterr().err
    assert main(["--object-store", "s3://bucket/p?nope=1"]) == 2
    assert "unknown s3 URI parameter" in capsys.readouterr().err


async def test_wal_logs_its_fencing_mode_once_per_open(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="woodpecker")
    meta = MemoryMetaStore()
    good = MemoryObjectStore()
    await (await LogStore.open(good, meta, WalConfig())).close()
    await (await LogStore.open(good, meta, WalConfig())).close()
    lines = [r for r in caplog.records if "WAL fencing mode" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO]
    assert "conditional writes (If-None-Match)" in lines[0].getMessage()
    assert good.uri in lines[0].getMessage() and "probed now" in lines[0].getMessage()
    assert "recorded by an earlier probe" in lines[1].getMessage()
    caplog.clear()
    bad = IgnoresConditions(MemoryObjectStore())
    await (await LogStore.open(bad, meta, WalConfig(lock_ttl=7.0))).close()
    (warning,) = [r for r in caplog.records if "WAL fencing mode" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert "meta-store lock" in message and "wal.lock_ttl=7s" in message and bad.uri in message
