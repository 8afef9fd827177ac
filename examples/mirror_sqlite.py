"""Mirror a Canopy collection into a local SQLite file with the change feed, resumably.

    python examples/mirror_sqlite.py --collection docs --db mirror.sqlite      # Ctrl-C stops
    python examples/mirror_sqlite.py --collection docs --until-idle 3          # catch up, exit

The table named after the collection holds one row per live entity: ``pk`` (the primary key),
``doc`` (every other field as JSON, dynamic fields included), ``writes`` (how many inserts and
upserts of this key were applied since it was last inserted fresh) and ``ts`` (the timestamp of
the change that wrote it). ``mirror_state`` holds, per collection, the token of the last applied
change and the number of changes applied.

Exactly-once application: each change is applied in one SQLite transaction that also stores
its resume token. The database therefore always holds the state after some change ``c`` *and*
``c``'s token -- never one without the other (a crash or Ctrl-C rolls back a half-applied
change together with its token). On restart the mirror watches ``since=<stored token>``, and the
feed guarantees (cluster/FEED.md, F2) that resuming from the token of ``c`` delivers exactly the
changes after ``c``: none lost, none repeated. So every change is applied once. (A write whose
outcome its writer never learned may or may not appear in the feed -- the feed is at-least-once
only for those; once it appears it is applied once, like any other.)

The first run starts at the collection's creation timestamp. That works while the WAL still
holds the collection's first writes; after the server truncated it (flushes), the feed refuses
with ``FeedTruncated`` and the mirror exits with status 2 (a snapshot bootstrap is not built).
A broken stream (server restart, network) is resumed from the stored token with exponential
back-off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from sdk import AsyncClient
from sdk.feed import Change, FeedError, FeedTruncated

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


class Idle(Exception):
    """No change arrived within ``--until-idle`` seconds."""


# --- the SQLite side ------------------------------------------------------------------------------


def open_db(path: Path, collection: str) -> sqlite3.Connection:
    """The mirror database with its two tables (created when missing)."""
    conn = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        f'CREATE TABLE IF NOT EXISTS "{collection}" '
        "(pk PRIMARY KEY, doc TEXT NOT NULL, writes INTEGER NOT NULL, ts INTEGER NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS mirror_state "
        "(collection TEXT PRIMARY KEY, token TEXT NOT NULL, changes INTEGER NOT NULL)"
    )
    return conn


def stored_token(conn: sqlite3.Connection, collection: str) -> str | None:
    row = conn.execute(
        "SELECT token FROM mirror_state WHERE collection = ?", (collection,)
    ).fetchone()
    return row[0] if row else None


def changes_applied(conn: sqlite3.Connection, collection: str) -> int:
    row = conn.execute(
        "SELECT changes FROM mirror_state WHERE collection = ?", (collection,)
    ).fetchone()
    return row[0] if row else 0


def apply(conn: sqlite3.Connection, table: str, pk_name: str, change: Change) -> None:
    """Apply one change and store its token, atomically (one transaction)."""
    rows = change.rows
    conn.execute("BEGIN IMMEDIATE")
    try:
        new_keys = {row[pk_name] for row in rows}
        gone = [(pk,) for pk in change.pks if pk not in new_keys]
        conn.executemany(f'DELETE FROM "{table}" WHERE pk = ?', gone)
        conn.executemany(
            f'INSERT INTO "{table}" (pk, doc, writes, ts) VALUES (?, ?, 1, ?) '
            "ON CONFLICT (pk) DO UPDATE SET doc = excluded.doc, writes = writes + 1, "
            "ts = excluded.ts",
            [(row[pk_name], _doc(row, pk_name), change.ts) for row in rows],
        )
        conn.execute(
            "INSERT INTO mirror_state (collection, token, changes) VALUES (?, ?, 1) "
            "ON CONFLICT (collection) DO UPDATE SET token = excluded.token, "
            "changes = changes + 1",
            (table, change.token),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _doc(row: dict[str, Any], pk_name: str) -> str:
    return json.dumps({k: v for k, v in row.items() if k != pk_name}, sort_keys=True)


# --- the feed side --------------------------------------------------------------------------------


async def start_point(client: AsyncClient, conn: sqlite3.Connection, name: str) -> str | int:
    """The stored token, else the collection's creation timestamp (first run)."""
    token = stored_token(conn, name)
    if token is not None:
        return token
    return (await client.describe_collection(name))["created_timestamp"]


async def consume(
    client: AsyncClient, conn: sqlite3.Connection, name: str, pk: str, idle: float | None
) -> None:
    """Apply changes from the stored token on until the stream ends (the collection was
    dropped) or, with ``idle``, until none arrived for ``idle`` seconds (:class:`Idle`)."""
    watch = client.watch(name, since=await start_point(client, conn, name))
    try:
        while True:
            try:
                change = await asyncio.wait_for(anext(watch), idle)
            except StopAsyncIteration:
                print(f"stream ended: {watch.end_reason or 'closed'}", file=sys.stderr)
                return
            except TimeoutError:
                raise Idle from None
            apply(conn, name, pk, change)
    finally:
        watch.close()


async def mirror(args: argparse.Namespace) -> int:
    """Run the mirror; reconnect on a retryable FeedError. Returns the exit status."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    conn = open_db(args.db, args.collection)
    before = changes_applied(conn, args.collection)
    try:
        async with AsyncClient(uri=args.uri) as client:
            desc = await client.describe_collection(args.collection)
            pk = next(f["name"] for f in desc["fields"] if f.get("is_primary"))
            delay = BACKOFF_MIN
            while True:
                try:
                    await consume(client, conn, args.collection, pk, args.until_idle)
                    return 0
                except Idle:
                    return 0
                except FeedTruncated as err:
                    print(f"error: {err}; the mirror must be rebuilt", file=sys.stderr)
                    return 2
                except FeedError as err:
                    if not err.retryable:
                        print(f"error: {err}", file=sys.stderr)
                        return 1
                    print(f"feed broke ({err}); resuming in {delay:.1f} s", file=sys.stderr)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
    finally:
        after = changes_applied(conn, args.collection)
        conn.close()
        print(f"applied {after - before} changes this run, {after} in all")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uri", default="http://127.0.0.1:19530")
    p.add_argument("--collection", required=True)
    p.add_argument("--db", type=Path, default=Path("mirror.sqlite"))
    p.add_argument(
        "--until-idle",
        type=float,
        metavar="SECONDS",
        help="exit 0 once no change arrived for SECONDS (default: run until Ctrl-C)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(mirror(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("stopped; the next run resumes from the stored token", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
