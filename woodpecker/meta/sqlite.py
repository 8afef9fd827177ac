"""``sqlite:///path.db`` — the embedded, single-process MetaStore (the standalone default).

The memory engine serves every read, lease and watch; each committed transaction is written
through to sqlite (WAL journal, ``synchronous=FULL``) before it is applied in memory and
acknowledged, so keys, versions and the store revision survive a restart. Commits are serialised
by one lock and run on one I/O thread, off the event loop; a commit whose caller is cancelled
still completes (it is shielded), so memory and file never diverge.

On open, keys attached to leases are deleted (the process that held the leases is gone) and the
watch history starts afresh: resuming a watch from before the open raises ``WatchCompacted``.
The file is locked exclusively while open; a second opener gets ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from woodpecker.clock import Clock
from woodpecker.errors import StorageError, Unavailable
from woodpecker.meta.base import Delete, KeyValue, TxnResult
from woodpecker.meta.engine import DEFAULT_HISTORY, FIRST_REVISION, Plan
from woodpecker.meta.memory import MemoryMetaStore

T = TypeVar("T")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        version INTEGER NOT NULL,
        create_revision INTEGER NOT NULL,
        mod_revision INTEGER NOT NULL,
        lease INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
)
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT = 1.0  # seconds to wait for another opener before Unavailable


class SqliteMetaStore(MemoryMetaStore):
    """A :class:`MemoryMetaStore` whose commits are durable in one sqlite file."""

    def __init__(
        self, path: str, clock: Clock | None = None, *, history_limit: int = DEFAULT_HISTORY
    ) -> None:
        super().__init__(clock, history_limit=history_limit)
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def uri(self) -> str:
        return f"sqlite:///{self._path}"  # an absolute path gives sqlite:////abs/path.db

    @property
    def path(self) -> str:
        return self._path

    # --- the one place sqlite errors are translated ---------------------------------------------

    async def _io(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="canopy-meta-sqlite")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise Unavailable(
                    f"sqlite meta store {self._path} is locked (in use by another process?): {text}"
                ) from exc
            raise StorageError(f"sqlite meta store {self._path}: {text}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"sqlite meta store {self._path}: {exc}") from exc

    # --- blocking work, on the I/O thread -------------------------------------------------------

    def _db_open(self) -> tuple[list[KeyValue], int]:
        directory = os.path.dirname(os.path.abspath(self._path))
        os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(
            self._path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # one process at a time
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('revision', ?)",
                (_SCHEMA_VERSION, FIRST_REVISION),
            )
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            if meta["schema_version"] != _SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"unknown schema version {meta['schema_version']}")
            rows = conn.execute(
                "SELECT key, value, version, create_revision, mod_revision, lease FROM kv"
            ).fetchall()
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        kvs = [KeyValue(k, bytes(v), ver, cr, mr, lease) for k, v, ver, cr, mr, lease in rows]
        return kvs, int(meta["revision"])

    def _db_write(self, plan: Plan) -> None:
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("the store is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for ch in plan.changes:
                if ch.kv is None:
                    conn.execute("DELETE FROM kv WHERE key = ?", (ch.key,))
                else:
                    kv = ch.kv
                    conn.execute(
                        "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            kv.key,
                            kv.value,
                            kv.version,
                            kv.create_revision,
                            kv.mod_revision,
                            kv.lease,
                        ),
                    )
            conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (plan.revision,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _db_close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- hooks ----------------------------------------------------------------------------------

    async def _load(self) -> None:
        kvs, revision = await self._io(self._db_open)
        self._engine.load(kvs, revision)
        leased = [kv.key for kv in kvs if kv.lease]
        if leased:  # their leaseholder was the previous process
            await super()._commit(lambda: self._engine.plan_ops([Delete(k) for k in leased]))

    async def _persist(self, plan: Plan) -> None:
        await self._io(self._db_write, plan)

    async def _commit(
        self, make_plan: Callable[[], Plan], after: Callable[[], None] | None = None
    ) -> tuple[Plan, TxnResult]:
        task = asyncio.get_running_loop().create_task(self._locked_commit(make_plan, after))
        task.add_done_callback(_consume_exception)
        return await asyncio.shield(task)

    async def _locked_commit(
        self, make_plan: Callable[[], Plan], after: Callable[[], None] | None
    ) -> tuple[Plan, TxnResult]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            return await super()._commit(make_plan, after)

    async def _shutdown(self) -> None:
        if self._lock is not None:
            async with self._lock:  # let an in-flight commit finish
                pass
        if self._executor is not None:
            try:
                await self._io(self._db_close)
            finally:
                self._executor.shutdown(wait=False)
                self._executor = None


def _consume_exception(task: asyncio.Task[object]) -> None:
    """A shielded commit whose caller was cancelled still reports its error to nobody: read it
    so asyncio does not warn; the caller that stayed got it through the shield."""
    if not task.cancelled():
        task.exception()
