"""Tokens of the Milvus filter language.

:func:`tokenize` turns the source into a list of :class:`Token` ending with an ``eof`` token, or
raises :class:`~cluster.expr.errors.ExprError` at the offending character. Kinds:

* ``int`` / ``float`` / ``str`` literals (``value`` is the Python value). Integers are decimal,
  ``0x`` hex, ``0b`` binary or C octal (``017``), and must fit int64; floats are decimal with an
  optional exponent (``1.``, ``.5``, ``1e-3``). (The binder checks the int64 range after
  folding ``-``, so ``-9223372036854775808`` works.) Strings are ``"..."`` or ``'...'`` with C/Go
  escapes (``\\n \\t \\" \\' \\\\ \\xhh \\uhhhh \\Uhhhhhhhh \\ooo``; any other ``\\c`` is kept
  as the two characters, so LIKE patterns can escape ``%`` and ``_``), or raw ``r"..."``.
* ``name``: identifiers (Unicode letters, digits, ``_``) and ``$meta``.
* ``kw``: the reserved words ``and or not in like exists true false`` in any case (``value``
  is lower-case). ``is`` and ``null`` stay names; the parser reads them in context.
* ``op``: ``== != < <= > >= + - * / % ** && || ! ( ) [ ] { } ,``.
* ``list``: a whole ``[...]`` of plain decimal ints or of strings without escapes (``value`` is
  the Python list): the fast path for long key lists.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from cluster.expr.errors import ExprError

__all__ = ["KEYWORDS", "Token", "tokenize"]

KEYWORDS = frozenset({"and", "or", "not", "in", "like", "exists", "true", "false"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Optional spaces, then one alternation tried in order: the bitwise / regex / "=" mistakes
# come before the operators that share their first character ("<<" before "<", "=~" before
# "=="); a number glued to letters or dots is one bad number.
_TOKEN = re.compile(
    r"""
    \s*(?:
    (?P<num>(?:0[xX][0-9a-fA-F]+|0[bB][01]+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?
            |\d+[eE][+-]?\d+|\d+)(?![\w.]))
  | (?P<badnum>\.?\d[\w.]*)
  | (?P<meta>\$meta(?!\w))
  | (?P<raw>[rR](?=["']))
  | (?P<name>[^\W\d]\w*)
  | (?P<quote>["'])
  | (?P<bad2>=~|!~|<<|>>)
  | (?P<op>\*\*|==|!=|<=|>=|&&|\|\||[<>+\-*/%!()\[\]{},])
  | (?P<bad1>[&|^~=])
    )""",
    re.VERBOSE,
)
# Whole lists of plain decimal ints or unescaped strings (``pk in [...]`` from pymilvus' delete
# and get, often 10^4-10^5 keys) become one ``list`` token, decoded by C-level string methods.
_INT_ITEM = r"[+-]?(?:[1-9][0-9]*|0)"
_INT_LIST = re.compile(rf"\[\s*(?:{_INT_ITEM}\s*,\s*)*{_INT_ITEM}\s*,?\s*\]")
_STR_ITEM = r"""(?:'[^'\\\n]*'|"[^"\\\n]*")"""
_STR_LIST = re.compile(rf"\[\s*(?:{_STR_ITEM}\s*,\s*)*{_STR_ITEM}\s*,?\s*\]")
_STR_VALUE = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_POSTFIX = frozenset({"name", "str"})  # a "[" after these (or after ")" "]") is an index

_UNSUPPORTED_OPS = {
    "=~": "regular expression match is not supported",
    "!~": "regular expression match is not supported",
    "<<": "bitwise operators are not supported",
    ">>": "bitwise operators are not supported",
    "&": "bitwise operators are not supported (use 'and' or '&&')",
    "|": "bitwise operators are not supported (use 'or' or '||')",
    "^": "bitwise operators are not supported",
    "~": "bitwise operators are not supported",
    "=": "unexpected '=' (use '==' to compare)",
}
_SIMPLE_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "?": "?",
}  # fmt: skip
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class Token(NamedTuple):
    """One token: ``kind`` (see module doc), its ``value``, source offset ``pos`` and ``text``."""

    kind: str
    value: object
    pos: int
    text: str


def tokenize(src: str) -> list[Token]:
    """All tokens of ``src`` followed by ``eof``; ExprError on the first bad character."""
    out: list[Token] = []
    append = out.append
    match = _TOKEN.match
    i, n = 0, len(src.rstrip())
    while i < n:
        m = match(src, i)
        if m is None:
            i = len(src) - len(src[i:].lstrip())
            raise ExprError(src, f"unexpected character {src[i]!r}", i)
        kind = m.lastgroup
        assert kind is not None
        start, end = m.span(kind)
        text = m.group(kind)
        if kind == "num":
            if text.isdigit() and (text[0] != "0" or len(text) == 1):
                value = int(text)
                if value > INT64_MAX + 1:  # 2**63 only as the operand of a minus sign
                    raise ExprError(
                        src, f"integer literal {text} is out of the range of int64", start
                    )
                append(Token("int", value, start, text))
            else:
                append(_number(src, start, text))
        elif kind == "name":
            low = text.lower()
            append(
                Token("kw", low, start, text)
                if low in KEYWORDS
                else Token("name", text, start, text)
            )
        elif kind == "op":
            if text == "[" and (lst := _literal_list(src, start, out)) is not None:
                append(lst)
                end = start + len(lst.text)
            else:
                append(Token("op", text, start, text))
        elif kind == "quote" or kind == "raw":
            raw = kind == "raw"
            value_s, end = _string(src, end + raw, src[end] if raw else text, raw=raw)
            append(Token("str", value_s, start, src[start:end]))
        elif kind == "meta":
            append(Token("name", "$meta", start, "$meta"))
        elif kind == "badnum":
            raise ExprError(src, f"invalid number literal {text!r}", start)
        else:  # bad1 / bad2
            raise ExprError(src, _UNSUPPORTED_OPS[text], start)
        i = end
    append(Token("eof", None, len(src), ""))
    return out


def _literal_list(src: str, i: int, out: list[Token]) -> Token | None:
    """The ``list`` token of a plain literal list starting at ``src[i] == "["``, or None."""
    if out and (out[-1].kind in _POSTFIX or out[-1].text in (")", "]")):
        return None
    m = _INT_LIST.match(src, i)
    if m is not None:
        text = m.group()
        items = text[1:-1].split(",")
        if not items[-1].strip():
            items.pop()  # trailing comma
        return Token("list", list(map(int, items)), i, text)
    m = _STR_LIST.match(src, i)
    if m is not None:
        text = m.group()
        return Token("list", [a or b for a, b in _STR_VALUE.findall(text)], i, text)
    return None


def _number(src: str, i: int, text: str) -> Token:
    """A non-decimal or float literal (``0x1F``, ``0b1``, ``017``, ``1.5e3``)."""
    prefix = text[:2].lower()
    if prefix == "0x":
        value = int(text, 16)
    elif prefix == "0b":
        value = int(text[2:], 2)
    elif "." in text or "e" in text or "E" in text:
        return Token("float", float(text), i, text)
    else:  # C octal, as Milvus (Go ParseInt base 0)
        if any(d in "89" for d in text):
            raise ExprError(src, f"invalid octal literal {text!r}", i)
        value = int(text, 8)
    if value > INT64_MAX + 1:
        raise ExprError(src, f"integer literal {text} is out of the range of int64", i)
    return Token("int", value, i, text)


def _string(src: str, i: int, quote: str, *, raw: bool) -> tuple[str, int]:
    """Decode a string whose opening quote is at ``i - 1``; (value, index after the quote)."""
    start = i - 1 if not raw else i - 2
    parts: list[str] = []
    n = len(src)
    while i < n:
        c = src[i]
        if c == quote:
            return "".join(parts), i + 1
        if c != "\\":
            parts.append(c)
            i += 1
            continue
        if i + 1 >= n:
            break
        e = src[i + 1]
        if raw:  # kept verbatim; only stops an escaped quote from closing the string
            parts.append(c + e)
            i += 2
        elif e in _SIMPLE_ESCAPES:
            parts.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e == "\n":
            i += 2
        elif e in _HEX_ESCAPES:
            width = _HEX_ESCAPES[e]
            digits = src[i + 2 : i + 2 + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ExprError(src, f"invalid escape sequence \\{e} in string", i)
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise ExprError(src, f"invalid escape sequence \\{e}{digits} in string", i)
            parts.append(chr(code))
            i += 2 + width
        elif e in "01234567":
            j = i + 1
            while j < min(n, i + 4) and src[j] in "01234567":
                j += 1
            parts.append(chr(int(src[i + 1 : j], 8)))
            i = j
        else:  # unknown escape: keep it (LIKE uses \% and \_)
            parts.append(c + e)
            i += 2
    raise ExprError(src, "unterminated string literal", start)
