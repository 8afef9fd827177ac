"""``canopy wal ...`` run in-process against a temporary file:// + sqlite:// store."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from woodpecker import cli as wal_cli


def _wal_registered() -> bool:
    return any(ep.name == "wal" for ep in metadata.entry_points(group="canopy.commands"))


@pytest.fixture
def canopy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run ``canopy ARGS`` in-process; returns (exit status, stdout, stderr)."""
    monkeypatch.setenv("CANOPY_OBJECT_STORE", f"file://{tmp_path / 'objects'}")
    monkeypatch.setenv("CANOPY_META", f"sqlite:///{tmp_path / 'meta.db'}")
    if _wal_registered():
        from cluster.cli import main

        def run_main(argv: list[str]) -> int:
            return main(argv)
    else:  # not installed with `pip install -e .`: run the same commands directly

        def run_main(argv: list[str]) -> int:
            assert argv[0] == "wal"
            return wal_cli.main(argv[1:])

    def run(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        code = run_main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


LINES = ["first", "zwei – ünïcode", "", "3", "last line without newline"]


def _append(canopy, log: str, lines: list[str], *extra: str) -> tuple[int, str, str]:
    data = "\n".join(lines).encode()
    return canopy("wal", "append", log, *extra, stdin=data)


def test_append_then_tail_gives_the_lines_back_in_order(canopy) -> None:
    code, out, err = _append(canopy, "events", LINES, "--create")
    assert code == 0, err
    assert "appended 5 entries" in out and "last id 0:4" in out

    code, out, err = canopy("wal", "tail", "events")
    assert code == 0, err
    assert out.splitlines() == [f"0:{i}\t{line}" for i, line in enumerate(LINES)]

    # a second append opens a new writer and segment; tail continues across segments
    assert _append(canopy, "events", ["more"])[0] == 0
    code, out, _ = canopy("wal", "tail", "events", "--from", "0:3", "--limit", "2")
    assert out.splitlines() == ["0:3\t3", "0:4\tlast line without newline"]
    code, out, _ = canopy("wal", "tail", "events", "--from", "0:4")
    assert out.splitlines() == ["0:4\tlast line without newline", "1:0\tmore"]
    code, out, _ = canopy("wal", "tail", "events", "--from", "latest")
    assert (code, out) == (0, "")

    code, out, _ = canopy("wal", "tail", "events", "--format", "json", "--limit", "2")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["0:0", "0:1"]
    assert base64.b64decode(rows[1]["payload"]).decode() == LINES[1]

    code, out, _ = canopy("wal", "tail", "events", "--format", "raw")
    assert out.splitlines() == [*LINES, "more"]

    # --follow stops once --limit entries arrived
    code, out, _ = canopy("wal", "tail", "events", "--follow", "--limit", "6")
    assert code == 0 and len(out.splitlines()) == 6


def test_ls_and_segments_show_the_log(canopy) -> None:
    assert canopy("wal", "create", "empty")[0] == 0
    assert _append(canopy, "events", ["a", "b", "c"], "--create")[0] == 0

    code, out, _ = canopy("wal", "ls")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "ID", "SEGMENTS", "LAST", "TRUNCATED", "AT"]
    assert [r.split() for r in rows] == [
        ["empty", "1", "0", "-", "-"],
        ["events", "2", "1", "0:2", "-"],
    ]

    code, out, _ = canopy("wal", "ls", "--prefix", "ev", "--json")
    (listed,) = json.loads(out)
    assert listed["name"] == "events" and listed["last_message_id"] == "0:2"
    assert listed["segments"] == 1 and listed["truncation_point"] is None

    code, out, _ = canopy("wal", "segments", "events")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:6] == ["SEGMENT", "STATE", "BLOCKS", "MERGED", "ENTRIES", "BYTES"]
    assert row.split()[:5] == ["0", "completed", "1", "-", "3"]

    code, out, _ = canopy("wal", "segments", "events", "--json")
    (seg,) = json.loads(out)
    assert seg["state"] == "completed" and seg["entries"] == 3 and seg["bytes"] > 0
    assert seg["created_at"].endswith("Z") and seg["completed_at"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["wal", "tail", "nope"], "log 'nope' not found"),
        (["wal", "segments", "nope"], "log 'nope' not found"),
        (["wal", "append", "nope"], "add --create"),
        (["wal", "create", "bad/name"], "invalid log name 'bad/name'"),
        (["wal", "tail", "events", "--from", "banana"], "bad start position 'banana'"),
        (["wal", "truncate", "events", "x:1"], "bad truncation point 'x:1'"),
        (["wal", "truncate", "events", "latest"], "not earliest/latest"),
        (["wal", "truncate", "events", "7:0"], "past the end"),
        (["wal", "delete", "events"], "--yes"),
        (["wal", "create", "events"], "already exists"),
        (["wal", "ls", "--meta", "bogus"], "bad meta store URI 'bogus'"),
        (["wal", "ls", "--object-store", "ftp://host/x"], "unsupported object store URI"),
    ],
)
def test_errors_are_one_line_and_exit_2(canopy, argv: list[str], message: str) -> None:
    assert _append(canopy, "events", ["a"], "--create")[0] == 0
    code, out, err = canopy(*argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("canopy: error: ") and message in err
    assert "Traceback" not in err


def test_truncate_and_audit(canopy) -> None:
    for n in range(3):  # three appends: three segments of two entries
        assert _append(canopy, "events", [f"{n}a", f"{n}b"], "--create")[0] == 0

    code, out, _ = canopy("wal", "truncate", "events", "2:0")
    assert code == 0 and "truncation point now 2:0 (was none)" in out
    code, out, _ = canopy("wal", "truncate", "events", "1:0")
    assert code == 0 and "stays at 2:0" in out

    code, out, _ = canopy("wal", "ls")
    assert out.splitlines()[1].split() == ["events", "1", "3", "2:1", "2:0"]

    code, out, _ = canopy("wal", "audit", "events")
    assert (code, out) == (0, "events: deleted segments 0, 1\n")
    code, out, _ = canopy("wal", "audit", "--json")
    assert json.loads(out)["events"]["deleted_segments"] == []

    code, out, _ = canopy("wal", "segments", "events", "--json")
    assert [s["segment"] for s in json.loads(out)] == [2]
    code, out, _ = canopy("wal", "tail", "events")
    assert out.splitlines() == ["2:0\t2a", "2:1\t2b"]
    code, _, err = canopy("wal", "tail", "events", "--from", "0:0")
    assert code == 2 and "truncation point" in err

    code, out, _ = canopy("wal", "delete", "events", "--yes")
    assert code == 0 and "deleted log 'events'" in out
    assert canopy("wal", "ls", "--json")[1].strip() == "[]"


def test_every_command_has_help_with_an_example(canopy, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("ls", "create", "delete", "segments", "tail", "append", "truncate", "audit"):
        with pytest.raises(SystemExit) as exc:
            canopy("wal", command, "--help")
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "example:" in out and "--object-store URI" in out and "--meta URI" in out


def test_woodpecker_cli_does_not_import_cluster() -> None:
    code = "import sys, woodpecker.cli; sys.exit('cluster' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
