"""The one error a bad filter expression raises: :class:`ExprError` (Milvus 1100)."""

from __future__ import annotations

from cluster.milvus.status import ParameterInvalid

__all__ = ["ExprError"]


class ExprError(ParameterInvalid):
    """A filter expression that does not lex, parse or type-check against the schema.

    Milvus answers such a filter with code 1100 and the reason ``failed to create query plan:
    cannot parse expression: <expr>, error: <detail>``; the detail here ends with ``(at
    position N)``, ``N`` the 0-based character offset in ``expr`` (also ``.position``).
    ``.detail`` is the bare message, for callers that build their own wording.
    """

    def __init__(self, expr: str, detail: str, position: int) -> None:
        self.expr = expr
        self.detail = detail
        self.position = position
        super().__init__(
            f"failed to create query plan: cannot parse expression: {expr}, error: {detail} "
            f"(at position {position})"
        )
