"""Milvus boolean filter expressions: parsed once into a plan, evaluated over Arrow columns.

API::

    plan = compile_filter(expr, schema, templates=None)   # ExprError if the filter is bad
    plan.fields          # frozenset of stored columns read ("$meta" for dynamic keys)
    plan.evaluate(table) # np.ndarray[bool], one per row of a pa.Table / pa.RecordBatch
    plan.pk_values()     # keys of "pk in [...]" / "pk == v" (or-ed), else None
    plan.always_true     # blank expression
    templates_from_proto(request.expr_template_values)  # -> the ``templates`` dict

The table has one column per field, named like the field, typed as
:func:`cluster.milvus.columns.arrow_schema` makes them (JSON and ``$meta`` as JSON bytes).

Pipeline: :mod:`~cluster.expr.lexer` (tokens) -> :mod:`~cluster.expr.parser` (Pratt parser,
:mod:`~cluster.expr.ast`) -> :mod:`~cluster.expr.binder` (names, templates, types, folding;
:mod:`~cluster.expr.bound`) -> :mod:`~cluster.expr.evaluator` over a
:mod:`~cluster.expr.context`. Every problem with the expression is an :class:`ExprError`
(ParameterInvalid, code 1100) naming the character offset; nothing else escapes for any input.

Grammar (Milvus' planparserv2, Plan.g4):

* literals: ints (decimal, ``0x``, ``0b``, C octal ``017``), floats, ``"..."`` / ``'...'``
  strings with escapes, raw ``r"..."``, ``true``/``false`` (any case), lists ``[1, 2]``,
  templates ``{name}`` (scalars or lists, from ``templates``);
* ``== != < <= > >=`` between a field / JSON path / array element / arithmetic and a literal,
  or two fields; chained ranges ``1 < x <= 5``, ``5 >= x > 1``;
* ``x in [...]``, ``x not in [...]``; ``x like "pat"`` (``%`` any run, ``_`` one character,
  ``\\`` escapes; prefix / suffix / infix patterns use dedicated kernels);
* ``and or not``, ``&& || !`` (keywords in any case), parentheses; ``not`` > ``and`` > ``or``;
* ``+ - * / % **`` and unary ``-``;
* ``meta["a"]["b"]``, ``meta["list"][0]``, ``$meta["k"]``; a bare name that is not a field is a
  dynamic key (``k`` = ``$meta["k"]``); ``arr[0]`` on ARRAY fields;
* ``x is null`` / ``is not null`` (a JSON path: missing or null), ``exists meta["k"]``;
* ``json_contains``, ``json_contains_all``, ``json_contains_any``, ``array_contains``,
  ``array_contains_all``, ``array_contains_any``, ``array_length`` (any case).

Semantics follow Milvus' segcore (2.5/2.6): a comparison with a null, missing or wrongly typed
value is false, but ``!=`` / ``not in`` on a JSON path match rows lacking the key (Milvus'
"different types are not equal"); ``not`` never turns a null row true, except that a JSON path
``is null`` (``not exists``) also holds when the whole JSON value is null; JSON numbers compare
numerically (int with float, int64 exactly), never with bools or strings. The null rules are
Milvus' data/valid bitmaps, not SQL's: ``not (rank > 3 and age > 10)`` matches a row whose
``rank`` is null when ``age <= 10``.

Deviations from Milvus (all accept more, none changes the result of an expression Milvus runs):
``not`` binds looser than comparisons (``not a == 1`` works; Milvus errors); arithmetic may
nest and combine fields (``a * 2 + b > 5``; Milvus: one field, one literal); ``**`` works on
fields; an integer field compares with a float literal; a bare bool field or JSON path is a
predicate; a constant predicate (``true``) is allowed; keywords in mixed case (``And``) are
keywords; ``_`` in ``like`` is always one character (older Milvus releases take it literally,
some newer ones treat a trailing ``_`` like ``%``); ``exists`` is false for a JSON ``null``.
Not supported (ExprError): ``text_match``, ``phrase_match``, ``random_sample``,
``element_filter``, GIS and timestamptz functions, struct fields, regex (``=~``) and bitwise
operators, JSON-with-column comparisons (Milvus neither).

Cost model (per :meth:`FilterPlan.evaluate`, n rows; measured on 1M rows):

* scalar fields: whole-column numpy / Arrow kernels, no per-row Python: ~2-5 ms per
  comparison, ``in``, ``is null`` or prefix / suffix / infix ``like``; ~10-30 ms for arithmetic;
  general ``like`` patterns run Arrow's RE2 (~50 ms).
* ARRAY fields: element access by offset arithmetic, ``array_contains*`` by flattening the
  lists and counting hits per parent row, ``array_length`` from the offsets: all vectorised.
* JSON fields and ``$meta``: Arrow has no JSON path kernel, so each JSON column the plan reads is
  decoded once per evaluation with ``orjson.loads`` (~0.35 us per small document), each path
  is extracted once (one list comprehension, ~0.05 us per row) and each typed view built once
  (~0.1 us per row); the comparisons then run vectorised: ~0.65 s per million rows for the first
  JSON predicate, little more for further paths of the same column. ``json_contains*``,
  ``exists`` and JSON list equality test each row in Python (~0.3 us per row).
* compile: ~0.2 ms for a typical filter; a ``pk in [...]`` of 100,000 keys ~0.1 s (the lexer
  reads a plain literal list with one regex and ``str.split``). A plan is immutable and
  reusable across evaluations and threads.
"""

from cluster.expr.errors import ExprError
from cluster.expr.plan import FilterPlan, compile_filter
from cluster.expr.templates import templates_from_proto

__all__ = ["ExprError", "FilterPlan", "compile_filter", "templates_from_proto"]
