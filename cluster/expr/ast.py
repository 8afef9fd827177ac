"""The parse tree: what the expression says, before names and types are checked.

Every node carries ``pos``, the 0-based offset of its first character (for operators: of the
operator), which errors report. :func:`children` lists a node's sub-nodes (for depth checks);
:func:`start` is where a node's whole text begins (for errors about an operand).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Arith",
    "Call",
    "Compare",
    "Exists",
    "In",
    "Index",
    "IsNull",
    "Like",
    "ListLit",
    "Literal",
    "Logical",
    "Name",
    "Node",
    "Placeholder",
    "Range",
    "Unary",
    "children",
    "start",
]


@dataclass(frozen=True, slots=True)
class Literal:
    """``1``, ``1.5``, ``"s"``, ``true``: ``value`` is int, float, str or bool; or a list of
    ints or strs for a plain literal list the lexer read whole."""

    value: int | float | str | bool | list[int] | list[str]
    pos: int


@dataclass(frozen=True, slots=True)
class ListLit:
    """``[a, b, ...]`` (items are checked to be constants by the binder)."""

    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Placeholder:
    """``{name}``: a value from the request's templates."""

    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier or ``$meta``."""

    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Index:
    """``base[key]``: a JSON key (str) or an array / JSON list index (int >= 0)."""

    base: Name | Index
    key: str | int
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    """``name(args...)``; ``name`` as written."""

    name: str
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Unary:
    """``op`` is ``"-"``, ``"+"`` or ``"not"`` (also written ``!``)."""

    op: str
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Arith:
    """Arithmetic: ``op`` in ``+ - * / % **``."""

    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Logical:
    """``and`` / ``or`` over two or more operands (chains are flattened)."""

    op: str
    operands: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right``, ``op`` in ``== != < <= > >=``."""

    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Range:
    """A chained range, normalised to ``lower <(=) operand <(=) upper``."""

    lower: Node
    lower_inclusive: bool
    operand: Node
    upper: Node
    upper_inclusive: bool
    pos: int


@dataclass(frozen=True, slots=True)
class In:
    """``operand [not] in values``."""

    operand: Node
    values: Node
    negated: bool
    pos: int


@dataclass(frozen=True, slots=True)
class Like:
    """``operand like pattern``."""

    operand: Node
    pattern: Node
    pos: int


@dataclass(frozen=True, slots=True)
class IsNull:
    """``operand is [not] null``."""

    operand: Node
    negated: bool
    pos: int


@dataclass(frozen=True, slots=True)
class Exists:
    """``exists operand``."""

    operand: Node
    pos: int


Node = (
    Literal
    | ListLit
    | Placeholder
    | Name
    | Index
    | Call
    | Unary
    | Arith
    | Logical
    | Compare
    | Range
    | In
    | Like
    | IsNull
    | Exists
)


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-nodes of ``node``."""
    match node:
        case ListLit(items=items) | Call(args=items) | Logical(operands=items):
            return items
        case Index(base=base):
            return (base,)
        case Unary(operand=x) | IsNull(operand=x) | Exists(operand=x):
            return (x,)
        case Arith(left=a, right=b) | Compare(left=a, right=b):
            return (a, b)
        case Range(lower=a, operand=b, upper=c):
            return (a, b, c)
        case In(operand=a, values=b) | Like(operand=a, pattern=b):
            return (a, b)
        case _:
            return ()


def start(node: Node) -> int:
    """The smallest offset in ``node``'s subtree: where its text begins."""
    low, stack = node.pos, [node]
    while stack:
        for child in children(stack.pop()):
            low = min(low, child.pos)
            stack.append(child)
    return low
