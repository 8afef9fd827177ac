"""Recursive-descent (Pratt) parser: source text -> :mod:`cluster.expr.ast` tree.

Precedence, loosest first (Python/SQL-like; Milvus binds ``not`` tighter, which only makes
``not a == 1`` an error there, so every expression Milvus accepts means the same here):

====  =====================================================  =============
1     ``or`` ``||``                                          n-ary
2     ``and`` ``&&``                                         n-ary
3     ``not`` ``!`` (prefix)
4     ``== != < <= > >=``, ``[not] in``, ``like``,          non-associative, except chained
      ``is [not] null`` (postfix)                            ranges ``1 < x <= 5``, ``5 >= x > 1``
5     ``+ -``                                                left
6     ``* / %``                                              left
7     ``-`` ``+`` (prefix)
8     ``**``                                                 right; ``-2 ** 2`` is ``-(2 ** 2)``
9     ``x[key]``, ``f(args)``, ``exists x``, literals, ``[list]``, ``{name}``, ``(...)``
====  =====================================================  =============

Nesting is limited to :data:`MAX_DEPTH` levels (parentheses, operators, list items), so a
hostile expression gets an :class:`~cluster.expr.errors.ExprError`, never a RecursionError.
"""

from __future__ import annotations

from cluster.expr import ast
from cluster.expr.errors import ExprError
from cluster.expr.lexer import Token, tokenize

__all__ = ["MAX_DEPTH", "parse"]

MAX_DEPTH = 128

_OR, _AND, _NOT, _CMP, _ADD, _MUL, _UNARY, _POW = range(1, 9)
_RELATIONAL = frozenset({"<", "<=", ">", ">="})
_ASCENDING = frozenset({"<", "<="})
_CMP_OPS = frozenset({"==", "!="}) | _RELATIONAL
_LITERALS = frozenset({"int", "float", "str"})


def parse(src: str) -> ast.Node:
    """The tree of ``src`` (which must not be blank); ExprError on any syntax error."""
    return _Parser(src).parse()


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "end of expression"
    return f"{tok.text!r}"


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = tokenize(src)
        self.i = 0
        self.depth = 0

    # --- token helpers ------------------------------------------------------------------------

    def peek(self, k: int = 0) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def error(self, detail: str, pos: int) -> ExprError:
        return ExprError(self.src, detail, pos)

    def expect_op(self, op: str, context: str) -> Token:
        tok = self.advance()
        if tok.kind != "op" or tok.value != op:
            raise self.error(f"expected {op!r} {context}, got {_describe(tok)}", tok.pos)
        return tok

    # --- grammar ------------------------------------------------------------------------------

    def parse(self) -> ast.Node:
        node = self.expr(0)
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error(f"unexpected {_describe(tok)}", tok.pos)
        self.check_depth(node)
        return node

    def check_depth(self, root: ast.Node) -> None:
        stack = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise self.error(f"expression is nested deeper than {MAX_DEPTH} levels", node.pos)
            kids = ast.children(node)
            if kids and depth == MAX_DEPTH:
                raise self.error(
                    f"expression is nested deeper than {MAX_DEPTH} levels", kids[0].pos
                )
            stack.extend((child, depth + 1) for child in kids if not isinstance(child, ast.Literal))

    def infix(self, tok: Token) -> tuple[str, int] | None:
        """The infix operator at ``tok`` and its binding power, or None."""
        kind, value = tok.kind, tok.value
        if kind == "op":
            if value == "||":
                return "or", _OR
            if value == "&&":
                return "and", _AND
            if value in _CMP_OPS:
                return str(value), _CMP
            if value in ("+", "-"):
                return str(value), _ADD
            if value in ("*", "/", "%"):
                return str(value), _MUL
            if value == "**":
                return "**", _POW
            return None
        if kind == "kw":
            if value in ("or", "and"):
                return str(value), _OR if value == "or" else _AND
            if value in ("in", "like"):
                return str(value), _CMP
            nxt = self.peek(1)
            if value == "not" and nxt.kind == "kw" and nxt.value == "in":
                return "not in", _CMP
            return None
        if kind == "name" and str(value).lower() == "is":
            return "is", _CMP
        return None

    def expr(self, min_bp: int) -> ast.Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                tok = self.peek()
                raise self.error(f"expression is nested deeper than {MAX_DEPTH} levels", tok.pos)
            return self.expr_loop(min_bp)
        finally:
            self.depth -= 1

    def expr_loop(self, min_bp: int) -> ast.Node:
        left = self.prefix()
        last_cmp: ast.Node | None = None  # the comparison just built at this level, if any
        while True:
            tok = self.peek()
            found = self.infix(tok)
            if found is None:
                return left
            op, bp = found
            if bp <= min_bp:
                return left
            if op in ("or", "and"):
                operands = [left]
                while (again := self.infix(self.peek())) is not None and again[0] == op:
                    self.advance()
                    operands.append(self.expr(bp))
                left = ast.Logical(op, tuple(operands), tok.pos)
                last_cmp = None
                continue
            if bp == _CMP:
                left = self.comparison(left, op, tok, last_cmp)
                last_cmp = left
                continue
            self.advance()
            right = self.expr(bp - 1 if op == "**" else bp)
            left = ast.Arith(op, left, right, tok.pos)
            last_cmp = None

    def comparison(
        self, left: ast.Node, op: str, tok: Token, last_cmp: ast.Node | None
    ) -> ast.Node:
        if last_cmp is not None:
            if (
                isinstance(last_cmp, ast.Compare)
                and op in _RELATIONAL
                and last_cmp.op in _RELATIONAL
                and (op in _ASCENDING) == (last_cmp.op in _ASCENDING)
            ):
                self.advance()
                bound = self.expr(_CMP)
                if op in _ASCENDING:  # lo < x < hi
                    return ast.Range(
                        last_cmp.left,
                        last_cmp.op == "<=",
                        last_cmp.right,
                        bound,
                        op == "<=",
                        last_cmp.pos,
                    )
                return ast.Range(  # hi > x > lo
                    bound, op == ">=", last_cmp.right, last_cmp.left, last_cmp.op == ">=", tok.pos
                )
            raise self.error(
                f"unexpected {_describe(tok)} after a comparison; combine comparisons with 'and' "
                "or use a range such as '1 < x < 5'",
                tok.pos,
            )
        self.advance()
        if op == "not in":
            self.advance()
        if op == "is":
            negated = False
            nxt = self.advance()
            if nxt.kind == "kw" and nxt.value == "not":
                negated = True
                nxt = self.advance()
            if nxt.kind != "name" or str(nxt.value).lower() != "null":
                raise self.error(f"expected 'null' after 'is', got {_describe(nxt)}", nxt.pos)
            return ast.IsNull(left, negated, tok.pos)
        right = self.expr(_CMP)
        if op in ("in", "not in"):
            return ast.In(left, right, op == "not in", tok.pos)
        if op == "like":
            return ast.Like(left, right, tok.pos)
        return ast.Compare(op, left, right, tok.pos)

    def prefix(self) -> ast.Node:
        tok = self.advance()
        kind, value = tok.kind, tok.value
        if kind in ("int", "float", "str", "list"):
            return ast.Literal(value, tok.pos)  # type: ignore[arg-type]
        if kind == "kw":
            if value in ("true", "false"):
                return ast.Literal(value == "true", tok.pos)
            if value == "not":
                return ast.Unary("not", self.expr(_NOT), tok.pos)
            if value == "exists":
                return ast.Exists(self.expr(_POW), tok.pos)
            raise self.error(f"unexpected keyword {tok.text!r}", tok.pos)
        if kind == "name":
            return self.name(tok)
        if kind == "op":
            if value == "!":
                return ast.Unary("not", self.expr(_NOT), tok.pos)
            if value in ("-", "+"):
                return ast.Unary(str(value), self.expr(_UNARY), tok.pos)
            if value == "(":
                inner = self.expr(0)
                self.expect_op(")", f"to close '(' at position {tok.pos}")
                return inner
            if value == "[":
                return ast.ListLit(self.items("]", tok), tok.pos)
            if value == "{":
                name = self.advance()
                if name.kind not in ("name", "kw"):
                    raise self.error(
                        f"expected a template name after '{{', got {_describe(name)}", name.pos
                    )
                self.expect_op("}", "to close the template placeholder")
                return ast.Placeholder(name.text, tok.pos)
        if kind == "eof":
            raise self.error("unexpected end of expression", tok.pos)
        raise self.error(f"unexpected {_describe(tok)}", tok.pos)

    def items(self, close: str, opener: Token) -> tuple[ast.Node, ...]:
        """Comma-separated expressions up to ``close`` (a trailing comma is allowed)."""
        out: list[ast.Node] = []
        toks = self.toks
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.value == close:
                self.advance()
                return tuple(out)
            after = toks[self.i + 1] if tok.kind != "eof" else tok
            if tok.kind in _LITERALS and after.kind == "op" and after.value in (",", close):
                self.i += 1  # fast path for long literal lists (``pk in [...]``)
                out.append(ast.Literal(tok.value, tok.pos))  # type: ignore[arg-type]
            else:
                out.append(self.expr(0))
            tok = self.advance()
            if tok.kind == "op" and tok.value == close:
                return tuple(out)
            if tok.kind != "op" or tok.value != ",":
                raise self.error(
                    f"expected ',' or {close!r} (opened at position {opener.pos}), "
                    f"got {_describe(tok)}",
                    tok.pos,
                )

    def name(self, tok: Token) -> ast.Node:
        nxt = self.peek()
        if nxt.kind == "op" and nxt.value == "(" and tok.value != "$meta":
            opener = self.advance()
            return ast.Call(str(tok.value), self.items(")", opener), tok.pos)
        node: ast.Name | ast.Index = ast.Name(str(tok.value), tok.pos)
        while (nxt := self.peek()).kind == "op" and nxt.value == "[":
            self.advance()
            key = self.advance()
            if key.kind == "str":
                if key.value == "":
                    raise self.error("empty JSON key", key.pos)
                node = ast.Index(node, str(key.value), nxt.pos)
            elif key.kind == "int":
                node = ast.Index(node, int(key.value), nxt.pos)  # type: ignore[call-overload]
            else:
                raise self.error(
                    "a JSON key must be a quoted string and an index a non-negative integer, "
                    f"got {_describe(key)}",
                    key.pos,
                )
            self.expect_op("]", "to close the index")
        return node
