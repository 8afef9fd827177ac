"""``canopy storage-check``: can this object store (and meta store) carry a Canopy deployment?

Registered with the ``canopy`` command line through the ``canopy.commands`` entry point group
(``storage-check = "cluster.storage_check:register"``); ``python -m cluster.storage_check ...``
runs the same command without the entry point.

:func:`check_storage` runs every check under a fresh scratch prefix (``_storage_check/<hex>/``)
and deletes it afterwards: put, get, a range get, head, a paged list, ``If-None-Match: *`` twice
(the second must be refused), ``If-Match`` with the current etag (must be accepted) and with a
stale one (must be refused), delete. With a meta store it also takes and releases a lease lock
the way WAL writers do without conditional writes, and reads what the WAL recorded about this
store. The :class:`StorageReport` names the WAL fencing mode the roles will use and, when the
store is not usable, what to fix. Exit status: 0 usable (either mode), 1 a check failed,
2 a usage error (bad URI, no store given).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from woodpecker.config import WalConfig
from woodpecker.errors import CanopyError, ObjectNotFound, PreconditionFailed, Unavailable
from woodpecker.meta.base import MetaStore
from woodpecker.objectstore.base import ObjectStore
from woodpecker.records import capabilities_key

SCRATCH_ROOT = "_storage_check/"
PAYLOAD = b"canopy storage check: 0123456789abcdefghijklmnopqrstuvwxyz"
RANGE = (7, 5)  # offset, length of the range get

MODE_CONDITIONAL = "conditional writes (If-None-Match/If-Match)"
MODE_LOCK = "meta-store lock (etcd lease; wal.lock_ttl={ttl:g}s)"
MODE_UNKNOWN = "unknown (the checks it depends on failed)"

EXIT_OK = 0
EXIT_FAILED = 1


@dataclass
class Check:
    """One check: ``ok`` is True (passed), False (failed: the store is not usable), or None
    (skipped, or a finding that does not make the store unusable; ``detail`` says which)."""

    name: str
    ok: bool | None
    detail: str = ""

    @property
    def result(self) -> str:
        return {True: "ok", False: "FAILED", None: "-"}[self.ok]


@dataclass
class StorageReport:
    """Everything ``canopy storage-check`` prints. ``usable`` decides the exit status."""

    object_store: str
    backend: str
    endpoint: str = "-"
    bucket: str = "-"
    prefix: str = "-"
    region: str = "-"
    addressing: str = "-"
    checksums: str = "-"
    meta: str | None = None
    lock_ttl: float = WalConfig().lock_ttl
    scratch_prefix: str = ""
    checks: list[Check] = field(default_factory=list)
    conditional_writes: bool | None = None  # the second If-None-Match: * was refused
    if_match: bool | None = None  # a stale If-Match was refused
    recorded: dict[str, Any] | None = None  # the WAL's capability record in the meta store
    warnings: list[str] = field(default_factory=list)
    fix: str | None = None

    @property
    def usable(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.usable else EXIT_FAILED

    @property
    def mode(self) -> str:
        """The WAL fencing mode the roles will use with this store (what LogStore probes)."""
        if self.conditional_writes is None:
            return MODE_UNKNOWN
        return MODE_CONDITIONAL if self.conditional_writes else MODE_LOCK.format(ttl=self.lock_ttl)

    @property
    def mode_meaning(self) -> str:
        if self.conditional_writes is None:
            return "fix the failed checks first"
        if self.conditional_writes:
            return (
                "every WAL block is created with If-None-Match: *, so a replaced writer fails "
                "its next PUT: fencing needs no timing assumption and a crashed streaming "
                "node's channels move as soon as its session expires"
            )
        return (
            "the store ignores If-None-Match, so each WAL writer holds a lease lock in the meta "
            f"store: a crashed writer's logs can be taken over only after wal.lock_ttl "
            f"({self.lock_ttl:g}s), and fencing relies on lease timing (a writer stalled "
            "longer than the lease may still finish a PUT). Lower wal.lock_ttl for faster "
            "failover, raise it if etcd or the nodes pause for long"
        )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(mode=self.mode, mode_meaning=self.mode_meaning, usable=self.usable)
        out["checks"] = [
            {"name": c.name, "ok": c.ok, "result": c.result, "detail": c.detail}
            for c in self.checks
        ]
        return out


# --- the checks -----------------------------------------------------------------------------------


class _Failed(Exception):
    """A check failed; the report holds it. Stops the object-store sequence."""


class _Runner:
    """Records each step of the sequence in the report."""

    def __init__(self, report: StorageReport) -> None:
        self.report = report
        self.first_error: BaseException | None = None

    def ok(self, name: str, detail: str) -> None:
        self.report.checks.append(Check(name, True, detail))

    def note(self, name: str, detail: str) -> None:
        self.report.checks.append(Check(name, None, detail))

    def fail(self, name: str, detail: str, exc: BaseException | None = None) -> _Failed:
        self.report.checks.append(Check(name, False, detail))
        if self.first_error is None and exc is not None:
            self.first_error = exc
        return _Failed(detail)

    async def call(self, name: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """``await op()``; an error fails the check ``name`` with the error as the reason."""
        try:
            return await op()
        except CanopyError as exc:
            raise self.fail(name, _one_line(exc), exc) from exc


async def check_storage(
    object_store: str | ObjectStore,
    meta: str | MetaStore | None = None,
    *,
    lock_ttl: float = WalConfig().lock_ttl,
) -> StorageReport:
    """Run every check against ``object_store`` (and ``meta`` when given) and report. Stores
    given as URIs are opened and closed here; given instances are left open. Never raises for
    a store failure: a failed check is in the report (``usable`` False, ``fix`` set)."""
    from woodpecker.meta.uri import open_meta_store
    from woodpecker.objectstore.uri import open_object_store

    objects = open_object_store(object_store) if isinstance(object_store, str) else object_store
    meta_store = open_meta_store(meta) if isinstance(meta, str) else meta
    report = _describe(objects, meta_store, lock_ttl)
    run = _Runner(report)
    try:
        await _resolved_s3_fields(objects, report)
        await _object_checks(objects, run)
        if meta_store is not None:
            await _meta_checks(meta_store, objects, run)
        elif report.conditional_writes is False:
            report.warnings.append(
                "the WAL will use the meta-store lock, which was not checked: run again with "
                "--meta (the etcd the roles use)"
            )
    finally:
        if isinstance(object_store, str):
            await objects.close()
        if isinstance(meta, str) and meta_store is not None:
            await meta_store.close()
    if not report.usable:
        report.fix = fix_hint(run.first_error, report)
    return report


async def _object_checks(objects: ObjectStore, run: _Runner) -> None:
    scratch = f"{SCRATCH_ROOT}{uuid.uuid4().hex[:12]}/"
    run.report.scratch_prefix = _display_prefix(run.report, scratch)
    try:
        await _basic_checks(objects, run, scratch)
        await _conditional_checks(objects, run, scratch)
        await _delete_check(objects, run, scratch)
    except _Failed:
        pass
    finally:
        await _cleanup(objects, run, scratch)


async def _basic_checks(objects: ObjectStore, run: _Runner, scratch: str) -> None:
    a, b = scratch + "a", scratch + "b"
    info = await run.call("put", lambda: objects.put(a, PAYLOAD))
    run.ok("put", f"{len(PAYLOAD)} bytes, etag {info.etag[:16]}")
    got = await run.call("get", lambda: objects.get(a))
    if got != PAYLOAD:
        raise run.fail("get", f"read back {len(got)} bytes that differ from what was written")
    run.ok("get", "read back the same bytes")
    offset, length = RANGE
    part = await run.call("range get", lambda: objects.get(a, offset=offset, length=length))
    if part != PAYLOAD[offset : offset + length]:
        raise run.fail("range get", f"bytes {offset}..{offset + length - 1} came back as {part!r}")
    run.ok("range get", f"bytes {offset}-{offset + length - 1} read back exactly")
    head = await run.call("head", lambda: objects.head(a))
    if head.size != len(PAYLOAD):
        raise run.fail("head", f"size {head.size}, expected {len(PAYLOAD)}")
    run.ok("head", f"size {head.size}")
    await run.call("list", lambda: objects.put(b, PAYLOAD))
    page = await run.call("list", lambda: objects.list_page(scratch, max_keys=1))
    listed = [o.key async for o in objects.list(scratch)]
    if [o.key for o in page.objects] != [a] or not page.is_truncated or listed != [a, b]:
        raise run.fail("list", f"listed {listed} (first page {page}), expected [{a!r}, {b!r}]")
    run.ok("list", "2 keys in order, paged (max_keys=1, then start_after)")


async def _conditional_checks(objects: ObjectStore, run: _Runner, scratch: str) -> None:
    key = scratch + "conditional"
    created = await _must_apply(
        run, "If-None-Match: * (new key)", lambda: objects.put(key, b"v1", if_none_match="*")
    )
    run.ok("If-None-Match: * (new key)", "created")
    run.report.conditional_writes = await _refused(
        run,
        "If-None-Match: * (existing key)",
        lambda: objects.put(key, b"v2", if_none_match="*"),
        honoured="refused (412): the WAL fences writers with conditional writes",
        ignored="ACCEPTED: the store ignores If-None-Match; the WAL falls back to the "
        "meta-store lock",
    )
    current = (await run.call("If-Match (current etag)", lambda: objects.head(key))).etag
    updated = await _must_apply(
        run, "If-Match (current etag)", lambda: objects.put(key, b"v3-longer", if_match=current)
    )
    run.ok("If-Match (current etag)", "accepted")
    stale = created.etag if created.etag != updated.etag else current
    run.report.if_match = await _refused(
        run,
        "If-Match (stale etag)",
        lambda: objects.put(key, b"v4", if_match=stale),
        honoured="refused (412): segment and index manifests update by compare-and-swap",
        ignored="ACCEPTED: the store ignores If-Match; concurrent updates of one segment or "
        "index manifest can overwrite each other (the meta-store lock covers only the WAL)",
    )
    if run.report.if_match is False:
        run.report.warnings.append(
            "If-Match is ignored: manifest compare-and-swap is not protected. Prefer a store "
            "that honours conditional writes"
        )


REJECTS = (
    "(the store rejects the conditional request itself; the WAL's startup probe and manifest "
    "updates would fail the same way)"
)


async def _must_apply(run: _Runner, name: str, op: Callable[[], Awaitable[Any]]) -> Any:
    """``await op()``, a conditional put whose condition holds: it must be applied."""
    try:
        return await op()
    except PreconditionFailed as exc:
        detail = f"refused although the condition holds: {_one_line(exc)}"
        raise run.fail(name, detail, exc) from exc
    except CanopyError as exc:
        raise run.fail(name, f"{_one_line(exc)} {REJECTS}", exc) from exc


async def _refused(
    run: _Runner, name: str, op: Callable[[], Awaitable[Any]], *, honoured: str, ignored: str
) -> bool:
    """True if ``op`` (a conditional put that must lose) was refused, False if the store
    applied it anyway (a finding, not a failure); any other error fails the check."""
    try:
        await op()
    except PreconditionFailed:
        run.ok(name, honoured)
        return True
    except CanopyError as exc:
        raise run.fail(name, f"{_one_line(exc)} {REJECTS}", exc) from exc
    run.note(name, ignored)
    return False


async def _delete_check(objects: ObjectStore, run: _Runner, scratch: str) -> None:
    a = scratch + "a"
    await run.call("delete", lambda: objects.delete(a))
    try:
        await objects.get(a)
    except ObjectNotFound:
        pass
    except CanopyError as exc:
        raise run.fail("delete", f"get after delete: {_one_line(exc)}", exc) from exc
    else:
        raise run.fail("delete", "the object is still readable after delete")
    await run.call("delete", lambda: objects.delete(a))
    run.ok("delete", "gone after delete; deleting again is not an error")


async def _cleanup(objects: ObjectStore, run: _Runner, scratch: str) -> None:
    """Delete everything under the scratch prefix (also after a failure)."""
    try:
        keys = [o.key async for o in objects.list(scratch)]
        for key in keys:
            await objects.delete(key)
        left = [o.key async for o in objects.list(scratch)]
    except CanopyError as exc:
        if run.report.usable:
            run.fail("cleanup", f"could not delete the scratch objects: {_one_line(exc)}", exc)
        else:
            run.note("cleanup", f"skipped after the failure above: {_one_line(exc)}")
        return
    if left:
        run.fail("cleanup", f"{len(left)} scratch objects still listed after delete: {left}")
    else:
        run.ok("cleanup", f"deleted {len(keys)} scratch objects")


# --- meta store ----------------------------------------------------------------------------------


async def _meta_checks(meta: MetaStore, objects: ObjectStore, run: _Runner) -> None:
    try:
        await _lease_lock_check(meta, run)
        await _capability_record_check(meta, objects, run)
    except _Failed:
        pass


async def _lease_lock_check(meta: MetaStore, run: _Runner) -> None:
    """Take, contend for and release a lease lock, the way WAL writers do in the fallback."""
    name = "meta lease lock"
    key = f"{SCRATCH_ROOT}{uuid.uuid4().hex[:12]}/lock"
    ttl = run.report.lock_ttl
    lease = await run.call(name, lambda: meta.grant_lease(ttl))
    try:
        took = await run.call(
            name, lambda: meta.cas(key, b"first", expected_version=0, lease=lease.id)
        )
        again = await run.call(name, lambda: meta.cas(key, b"second", expected_version=0))
        await run.call(name, lease.keepalive)
    finally:
        with contextlib.suppress(CanopyError):
            await lease.revoke()
    left = await run.call(name, lambda: meta.get(key))
    if not took or again or left is not None:
        with contextlib.suppress(CanopyError):
            await meta.delete(key)
        raise run.fail(
            name,
            f"lock taken={took}, second holder refused={not again}, released on revoke="
            f"{left is None}: the meta store does not behave like etcd",
        )
    run.ok(name, f"lease (ttl {ttl:g}s) taken, contended, kept alive and released")


async def _capability_record_check(meta: MetaStore, objects: ObjectStore, run: _Runner) -> None:
    """Compare what the WAL recorded about this store with what the checks found."""
    name = "WAL capability record"
    key = capabilities_key(objects.uri)
    kv = await run.call(name, lambda: meta.get(key))
    if kv is None:
        run.note(name, f"none yet ({key}): the first role to start probes the store")
        return
    record = json.loads(kv.value)
    run.report.recorded = record
    recorded = bool(record.get("conditional_writes", True))
    found = run.report.conditional_writes
    if found is None or recorded == found:
        mode = "conditional writes" if recorded else "meta-store lock"
        run.ok(name, f"{key}: the WAL uses {mode}")
    elif recorded:
        raise run.fail(
            name,
            f"{key} says the store honours conditional writes, but it ignores them now: WAL "
            "writers are NOT fenced. Stop every streaming node, delete this key so the next "
            "start probes again (it then uses the meta-store lock), or fix the store",
        )
    else:
        run.note(
            name,
            f"{key} says the store ignores conditional writes (the WAL keeps the meta-store "
            "lock); it honours them now. To switch, stop every streaming node and delete "
            "this key",
        )


# --- describing the store ------------------------------------------------------------------------


def _describe(objects: ObjectStore, meta: MetaStore | None, lock_ttl: float) -> StorageReport:
    uri = redact(objects.uri)
    backend = uri.split("://", 1)[0] if "://" in uri else type(objects).__name__
    report = StorageReport(uri, backend, meta=redact(meta.uri) if meta else None, lock_ttl=lock_ttl)
    from woodpecker.objectstore.s3 import S3ObjectStore

    inner = _unwrap(objects)
    if isinstance(inner, S3ObjectStore):
        _describe_s3(report, inner)
    return report


def _describe_s3(report: StorageReport, store: Any) -> None:
    env_endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = store.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    report.endpoint = redact(
        store.endpoint_url
        or (f"{env_endpoint} (from the environment)" if env_endpoint else "AWS S3 (default)")
    )
    report.bucket = store.bucket
    report.prefix = store.prefix or "(none)"
    report.region = region or "(not set: boto's default chain, else us-east-1)"
    report.addressing = store.addressing_style + (
        " (bucket in the host name where possible)" if store.addressing_style == "auto" else ""
    )
    config = store._config
    report.checksums = (
        f"request {config.request_checksum_calculation}, "
        f"response {config.response_checksum_validation}"
    )


async def _resolved_s3_fields(objects: ObjectStore, report: StorageReport) -> None:
    """Endpoint and region as boto resolved them (creating the client does no I/O)."""
    from woodpecker.objectstore.s3 import S3ObjectStore

    store = _unwrap(objects)
    if not isinstance(store, S3ObjectStore):
        return
    try:
        client = await store._s3()
    except CanopyError:
        return  # the first check reports the same failure
    if not store.endpoint_url:
        report.endpoint = f"{client.meta.endpoint_url} (resolved by boto)"
    if not store.region:
        report.region = f"{client.meta.region_name} (resolved by boto)"


def _unwrap(store: Any) -> Any:
    while hasattr(store, "inner"):
        store = store.inner
    return store


def _display_prefix(report: StorageReport, scratch: str) -> str:
    base = report.prefix if report.prefix not in ("-", "(none)") else ""
    return base + scratch


def redact(uri: str) -> str:
    """``uri`` with any ``user:password@`` (plain or %-encoded) replaced by ``***@``."""
    return re.sub(r"://[^/?#@]*?(?:@|%40)", "://***@", uri)


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


# --- what to fix ---------------------------------------------------------------------------------

_HINTS: tuple[tuple[str, str], ...] = (
    (
        r"bucket does not exist|NoSuchBucket",
        "the bucket {bucket!r} does not exist: create it (AWS: `aws s3 mb s3://{bucket}`; "
        "MinIO: `mc mb ALIAS/{bucket}`; SeaweedFS: `weed shell` then `s3.bucket.create "
        "-name {bucket}`) or fix the bucket in the URI",
    ),
    (
        r"no usable AWS credentials",
        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or "
        "an instance/pod role on AWS) in the environment of every role",
    ),
    (
        r"InvalidAccessKeyId|SignatureDoesNotMatch|InvalidToken|ExpiredToken|"
        r"Unauthorized|\b403\b",
        "the server rejected the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
        "(and AWS_SESSION_TOKEN) are the ones this server knows",
    ),
    (
        r"AccessDenied",
        "access denied: the identity needs s3:PutObject, s3:GetObject, s3:DeleteObject and "
        "s3:ListBucket on {bucket}/{prefix}*",
    ),
    (
        r"AuthorizationHeaderMalformed|PermanentRedirect|IllegalLocationConstraint|"
        r"region '[^']*' is wrong",
        "region mismatch: set region=<the bucket's region> in the URI (or AWS_REGION)",
    ),
    (
        r"cannot connect|Could not connect|Name or service not known|nodename nor servname",
        "the endpoint is unreachable: check endpoint= (http vs https, host, port) and that "
        "the server runs and is reachable from this host; with addressing=virtual or auto "
        "the bucket becomes part of the host name (use addressing=path for MinIO, "
        "SeaweedFS and other servers without wildcard DNS)",
    ),
    (
        r"timed out",
        "the endpoint did not answer in time: check the network path and the server's load",
    ),
    (
        r"rejects the conditional request",
        "the store does not accept conditional PUTs at all: upgrade it (MinIO, SeaweedFS and "
        "AWS S3 all support them) — Canopy cannot start on it",
    ),
)


def fix_hint(exc: BaseException | None, report: StorageReport) -> str:
    """One sentence saying what to fix, from the first failure."""
    failed = next((c for c in report.checks if c.ok is False), None)
    text = " ".join(filter(None, [str(exc) if exc else "", failed.detail if failed else ""]))
    if re.search(rf"cannot connect.*//{re.escape(report.bucket)}\.", text):
        return (
            f"virtual-host addressing put the bucket in the host name ({report.bucket}.HOST), "
            "which does not resolve: add addressing=path to the URI (MinIO, SeaweedFS and "
            "most S3-compatible servers), or set up wildcard DNS for the endpoint"
        )
    for pattern, hint in _HINTS:
        if re.search(pattern, text):
            return hint.format(bucket=report.bucket, prefix=report.prefix)
    if isinstance(exc, Unavailable):
        return "the store is unavailable (see the failed check); try again, then check the server"
    if failed is not None:
        return f"check {failed.name!r} failed: {failed.detail}"
    return "see the failed checks above"


# --- output --------------------------------------------------------------------------------------


def format_report(report: StorageReport) -> str:
    """The human-readable report: store fields, a table of checks, the mode, the verdict."""
    fields = [
        ("object store", report.object_store),
        ("backend", report.backend),
        ("endpoint", report.endpoint),
        ("bucket", report.bucket),
        ("prefix", report.prefix),
        ("region", report.region),
        ("addressing", report.addressing),
        ("checksums", report.checksums),
        ("meta store", report.meta or "(not given: the lease lock is not checked)"),
        ("scratch prefix", f"{report.scratch_prefix} (deleted afterwards)"),
    ]
    lines = ["Canopy storage check", ""]
    lines += [f"  {name:<15}{value}" for name, value in fields]
    width = max(len(c.name) for c in report.checks) if report.checks else 5
    lines += ["", f"  {'CHECK':<{width}}  {'RESULT':<6}  DETAIL"]
    lines += [f"  {c.name:<{width}}  {c.result:<6}  {c.detail}" for c in report.checks]
    lines += ["", f"WAL fencing mode: {report.mode}", _wrap(report.mode_meaning, "  ")]
    lines += [_wrap(f"WARNING: {w}", "") for w in report.warnings]
    if report.usable:
        lines.append("\nRESULT: usable (exit 0)")
    else:
        lines.append(f"\nRESULT: NOT usable (exit 1)\nFIX: {report.fix}")
    return "\n".join(lines)


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, 96, initial_indent=indent, subsequent_indent=indent + "  ")


# --- command line --------------------------------------------------------------------------------

DESCRIPTION = """\
Check that an object store (and the meta store) can carry Canopy: put, get, range get, head,
paged list, delete, If-None-Match and If-Match, all under a scratch prefix that is deleted
afterwards. Reports the store's endpoint, bucket, region and addressing, each check, and the
WAL fencing mode the roles will use: conditional writes, or the meta-store (etcd) lease lock.
Exit status 0 when the store is usable, 1 when a check failed (the FIX line says what to do),
2 for a usage error. S3 credentials come from the AWS environment (AWS_ACCESS_KEY_ID, ...)."""

EPILOG = """\
examples:
  canopy storage-check --config canopy.yaml
  canopy storage-check --object-store 's3://canopy/data?endpoint=http://127.0.0.1:8333' \\
                       --meta etcd://127.0.0.1:2379/canopy
  canopy storage-check --object-store s3://my-bucket/canopy?region=eu-west-1 --json"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``storage-check`` to the top-level ``canopy`` parser."""
    cmd = subparsers.add_parser(
        "storage-check",
        help="check an object store (and meta store) before deploying; show the WAL mode",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(cmd)
    cmd.set_defaults(func=run_command)


def _add_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--object-store", default="", metavar="URI", help="object store URI")
    cmd.add_argument("--meta", default="", metavar="URI", help="meta store URI (etcd://...)")
    cmd.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="FILE",
        help="read object_store, meta and wal.lock_ttl from this canopy.yaml (plus CANOPY_* "
        "overrides); --object-store/--meta win over it",
    )
    cmd.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run_command(args: argparse.Namespace) -> int:
    """The command: resolve the stores, run the checks, print the report, return the status."""
    from cluster.cli import CommandError
    from cluster.config import load_config

    try:
        config = load_config(args.config)
    except CanopyError as exc:
        raise CommandError(str(exc)) from None
    object_store = args.object_store or config.object_store
    meta = args.meta or config.meta or None
    if not object_store:
        raise CommandError(
            "no object store: pass --object-store URI or --config FILE (or set CANOPY_OBJECT_STORE)"
        )
    try:
        report = asyncio.run(check_storage(object_store, meta, lock_ttl=config.wal.lock_ttl))
    except CanopyError as exc:  # a malformed URI: nothing was checked
        raise CommandError(f"{type(exc).__name__}: {exc}") from None
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cluster.storage_check [options]``: the command without the ``canopy`` front
    end (same options, output and exit status)."""
    from cluster.cli import CommandError

    parser = argparse.ArgumentParser(
        prog="canopy storage-check",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(parser)
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except CommandError as exc:
        print(f"canopy: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
