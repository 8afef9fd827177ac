"""Milvus validation rules: names, and the vectorised checks on decoded insert columns.

Names (collection, alias, partition, field, database, index) follow Milvus' proxy rules: ASCII
letters, digits and underscores, the first character a letter or an underscore, at most
:data:`MAX_NAME_LENGTH` (255) characters, surrounding spaces ignored. Each ``validate_*_name``
returns the stripped name or raises the Milvus error with Milvus' wording (including its double
spaces, which test suites match on).

The column checks take whole columns (numpy arrays / Arrow arrays) and never loop over rows in
Python; on failure they name the first offending row, as Milvus does.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.milvus.status import (
    DatabaseNameInvalid,
    FieldNameInvalid,
    ParameterInvalid,
)

MAX_NAME_LENGTH = 255
"""Milvus ``proxy.maxNameLength``: names longer than this are refused."""

MAX_JSON_LENGTH = 65536
"""Milvus ``common.JSONMaxLength``: bytes per JSON value (user JSON fields and ``$meta``)."""

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FIRST_RE = re.compile(r"[A-Za-z_]")
_REST_RE = re.compile(r"[A-Za-z0-9_]*\Z")


def _name_problem(name: str) -> str | None:
    """Which rule ``name`` (non-empty, stripped) breaks: "length", "first", "chars" or None."""
    if len(name.encode()) > MAX_NAME_LENGTH:
        return "length"
    if _NAME_RE.match(name):
        return None
    if not _FIRST_RE.match(name[0]):
        return "first"
    return "chars"


def validate_collection_name(name: str, kind: str = "name") -> str:
    """Collection names and aliases (``kind="alias"``); ParameterInvalid (1100)."""
    name = name.strip()
    if not name:
        raise ParameterInvalid(f"collection {kind} should not be empty")
    problem = _name_problem(name)
    if problem is None:
        return name
    invalid = f"Invalid collection {kind}: {name}. "
    if problem == "length":
        raise ParameterInvalid(
            f"{invalid} the length of a collection {kind} must be less than "
            f"{MAX_NAME_LENGTH} characters"
        )
    if problem == "first":
        raise ParameterInvalid(
            f"{invalid} the first character of a collection {kind} must be an underscore or letter"
        )
    raise ParameterInvalid(
        f"{invalid} collection {kind} can only contain numbers, letters and underscores"
    )


def validate_alias(alias: str) -> str:
    return validate_collection_name(alias, "alias")


def validate_partition_name(name: str) -> str:
    """Partition names; ParameterInvalid (1100)."""
    name = name.strip()
    invalid = f"Invalid partition name: {name}. "
    if not name:
        raise ParameterInvalid(invalid + "Partition name should not be empty.")
    problem = _name_problem(name)
    if problem == "length":
        raise ParameterInvalid(
            f"{invalid}The length of a partition name must be less than {MAX_NAME_LENGTH} "
            "characters."
        )
    if problem == "first":
        raise ParameterInvalid(
            invalid + "The first character of a partition name must be an underscore or letter."
        )
    if problem == "chars":
        raise ParameterInvalid(
            invalid + "Partition name can only contain numbers, letters and underscores."
        )
    return name


def validate_field_name(name: str) -> str:
    """Field names; FieldNameInvalid (1701)."""
    name = name.strip()
    if not name:
        raise FieldNameInvalid(name, "field name should not be empty")
    invalid = f"Invalid field name: {name}. "
    problem = _name_problem(name)
    if problem == "length":
        raise FieldNameInvalid(
            name,
            f"{invalid}The length of a field name must be less than {MAX_NAME_LENGTH} characters.",
        )
    if problem == "first":
        raise FieldNameInvalid(
            name, invalid + "The first character of a field name must be an underscore or letter."
        )
    if problem == "chars":
        raise FieldNameInvalid(
            name, invalid + "Field name can only contain numbers, letters, and underscores."
        )
    return name


def validate_database_name(name: str) -> str:
    """Database names; DatabaseNameInvalid (802)."""
    name = name.strip()
    if not name:
        raise DatabaseNameInvalid(name, "database name couldn't be empty")
    problem = _name_problem(name)
    if problem == "length":
        raise DatabaseNameInvalid(
            name, f"the length of a database name must be less than {MAX_NAME_LENGTH} characters"
        )
    if problem == "first":
        raise DatabaseNameInvalid(
            name, "the first character of a database name must be an underscore or letter"
        )
    if problem == "chars":
        raise DatabaseNameInvalid(
            name, "database name can only contain numbers, letters and underscores"
        )
    return name


def validate_index_name(name: str) -> str:
    """Index names; the empty name is allowed (the server picks the default name)."""
    name = name.strip()
    if not name:
        return name
    invalid = f"Invalid index name: {name}. "
    problem = _name_problem(name)
    if problem == "length":
        raise ParameterInvalid(
            f"{invalid}The length of a index name must be less than {MAX_NAME_LENGTH} characters."
        )
    if problem == "first":
        raise ParameterInvalid(
            invalid + "The first character of a index name must be an underscore or letter."
        )
    if problem == "chars":
        raise ParameterInvalid(
            invalid + "Index name can only contain numbers, letters, and underscores."
        )
    return name


# --- vectorised column checks ---------------------------------------------------------------------


def _go_float(value: float) -> str:
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:f}"


def check_finite(values: np.ndarray) -> None:
    """Refuse NaN and +-Inf anywhere in ``values`` (float vectors, FLOAT/DOUBLE columns)."""
    if values.size == 0:
        return
    flat = values.reshape(-1)
    # Fast path: NaN or +-Inf anywhere makes the dot product NaN or Inf (inf * inf, never
    # 0 * inf); a non-finite result may also be an overflow, so the exact check decides then.
    if flat.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.dot(flat, flat)):
                return
    finite = np.isfinite(values)
    if finite.all():
        return
    bad = values.reshape(-1)[int(np.argmin(finite.reshape(-1)))]
    raise ParameterInvalid(f"value '{_go_float(float(bad))}' is not a number or infinity")


def check_int_range(values: np.ndarray, low: int, high: int) -> None:
    """INT8/INT16 data arrives as int32: refuse values outside ``[low, high]``."""
    if values.size == 0:
        return
    bad = (values < low) | (values > high)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    raise ParameterInvalid(
        f"the {i}th element ({int(values[i])}) out of range: [{low}, {high}]",
        expected="integer doesn't overflow",
        actual="out of range",
    )


def _byte_lengths(values: pa.Array) -> np.ndarray:
    """Byte length of each string/binary value (0 for nulls) as an int array."""
    return pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False)


def check_varchar_length(values: pa.Array, max_length: int, field_name: str) -> None:
    """Milvus counts VARCHAR ``max_length`` in bytes of UTF-8 (Go ``len(string)``)."""
    if len(values) == 0:
        return
    lengths = _byte_lengths(values)
    over = lengths > max_length
    if not over.any():
        return
    i = int(np.argmax(over))
    raise ParameterInvalid(
        f"length of varchar field {field_name} exceeds max length, row number: {i}, "
        f"length: {int(lengths[i])}, max length: {max_length}"
    )


def check_array_capacity(values: pa.ListArray, max_capacity: int) -> None:
    """Every ARRAY row holds at most ``max_capacity`` elements."""
    if len(values) == 0:
        return
    lengths = np.diff(values.offsets.to_numpy())
    over = lengths > max_capacity
    if not over.any():
        return
    i = int(np.argmax(over))
    raise ParameterInvalid(
        f"the length ({int(lengths[i])}) of {i}th array exceeds max capacity ({max_capacity})",
        expected="valid length array",
        actual="array length exceeds max capacity",
    )


def check_array_varchar_length(values: pa.ListArray, max_length: int, field_name: str) -> None:
    """VARCHAR elements of an ARRAY field obey the field's ``max_length`` (bytes)."""
    flat = values.values
    if len(flat) == 0:
        return
    lengths = _byte_lengths(flat)
    over = lengths > max_length
    if not over.any():
        return
    j = int(np.argmax(over))
    offsets = values.offsets.to_numpy()
    row = int(np.searchsorted(offsets, j, side="right") - 1)
    raise ParameterInvalid(
        f'length of Array array field "{field_name}" exceeds max length, row number: {row}, '
        f"array index: {j - int(offsets[row])}, length: {int(lengths[j])}, "
        f"max length: {max_length}"
    )


def check_json_length(values: pa.Array, field_name: str, *, dynamic: bool) -> None:
    """Each JSON value is at most :data:`MAX_JSON_LENGTH` bytes."""
    if len(values) == 0:
        return
    lengths = _byte_lengths(values)
    over = lengths > MAX_JSON_LENGTH
    if not over.any():
        return
    n = int(lengths[int(np.argmax(over))])
    if dynamic:
        raise ParameterInvalid(
            f"the length ({n}) of dynamic field exceeds max length ({MAX_JSON_LENGTH})",
            expected="valid length dynamic field",
            actual="length exceeds max length",
        )
    raise ParameterInvalid(
        f"the length ({n}) of json field ({field_name}) exceeds max length ({MAX_JSON_LENGTH})",
        expected="valid length json string",
        actual="length exceeds max length",
    )
