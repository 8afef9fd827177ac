"""The one table printer of the benchmarks: aligned columns, a rule between row groups."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(
    title: str,
    header: Sequence[str],
    body: Sequence[Sequence[str]],
    right: Sequence[bool],
    groups: Sequence[object] | None = None,
) -> str:
    """``title``, then ``header`` and ``body`` with each column padded to its widest cell
    (right-aligned where ``right`` says so); a rule under the header and wherever the value in
    ``groups`` (one per body row, e.g. the backend) changes."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title, line(header), rule]
    keys = list(groups) if groups is not None else [None] * len(body)
    for k, cells in enumerate(body):
        if k and keys[k] != keys[k - 1]:
            out.append(rule)
        out.append(line(cells))
    return "\n".join(out)
