"""cluster.milvus.validate: Milvus' name rules (and wording) for every kind of name."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from cluster.milvus import validate as v
from cluster.milvus.status import (
    DatabaseNameInvalid,
    FieldNameInvalid,
    MilvusError,
    ParameterInvalid,
)


def reason(fn: Callable[[str], str], name: str, exc: type[MilvusError] = ParameterInvalid) -> str:
    with pytest.raises(exc) as info:
        fn(name)
    return info.value.reason


@pytest.mark.parametrize(
    "fn",
    [
        v.validate_collection_name,
        v.validate_alias,
        v.validate_partition_name,
        v.validate_field_name,
        v.validate_database_name,
        v.validate_index_name,
    ],
)
def test_valid_names(fn: Callable[[str], str]) -> None:
    for name in ("a", "_", "A_1", "_x9", "a" * 255, "  padded  "):
        assert fn(name) == name.strip()


def test_collection_names() -> None:
    assert reason(v.validate_collection_name, "") == (
        "collection name should not be empty: invalid parameter"
    )
    assert reason(v.validate_collection_name, "1a") == (
        "Invalid collection name: 1a.  the first character of a collection name must be an "
        "underscore or letter: invalid parameter"
    )
    assert "collection name can only contain numbers, letters and underscores" in reason(
        v.validate_collection_name, "a-b"
    )
    assert "the length of a collection name must be less than 255 characters" in reason(
        v.validate_collection_name, "a" * 256
    )
    assert "collection name can only contain" in reason(v.validate_collection_name, "naïve")
    assert "Invalid collection alias: 9" in reason(v.validate_alias, "9")


def test_partition_names() -> None:
    assert reason(v.validate_partition_name, " ") == (
        "Invalid partition name: . Partition name should not be empty.: invalid parameter"
    )
    assert "The first character of a partition name must be an underscore or letter." in reason(
        v.validate_partition_name, "1p"
    )
    assert "Partition name can only contain numbers, letters and underscores." in reason(
        v.validate_partition_name, "p.q"
    )
    assert "The length of a partition name must be less than 255 characters." in reason(
        v.validate_partition_name, "p" * 256
    )


def test_field_names() -> None:
    assert reason(v.validate_field_name, "", FieldNameInvalid) == (
        "field name should not be empty: field name invalid[field=]"
    )
    assert "must be less than 255 characters." in reason(
        v.validate_field_name, "f" * 256, FieldNameInvalid
    )
    assert "The first character of a field name must be an underscore or letter." in reason(
        v.validate_field_name, "$meta", FieldNameInvalid
    )
    assert "Field name can only contain numbers, letters, and underscores." in reason(
        v.validate_field_name, "a$b", FieldNameInvalid
    )


def test_database_names() -> None:
    assert reason(v.validate_database_name, "", DatabaseNameInvalid) == (
        "database name couldn't be empty: invalid database name[database=]"
    )
    assert reason(v.validate_database_name, "2db", DatabaseNameInvalid) == (
        "the first character of a database name must be an underscore or letter: "
        "invalid database name[database=2db]"
    )
    assert "database name can only contain numbers, letters and underscores" in reason(
        v.validate_database_name, "d b", DatabaseNameInvalid
    )
    with pytest.raises(DatabaseNameInvalid) as info:
        v.validate_database_name("x y")
    assert info.value.to_status().code == 802


def test_index_names() -> None:
    assert v.validate_index_name("") == ""  # the server picks the default name
    assert "The first character of a index name must be an underscore or letter." in reason(
        v.validate_index_name, "1i"
    )
    assert "Index name can only contain numbers, letters, and underscores." in reason(
        v.validate_index_name, "i-1"
    )


def test_column_checks_report_the_first_bad_row() -> None:
    with pytest.raises(ParameterInvalid, match="value '-Inf' is not a number"):
        v.check_finite(np.array([1.0, -np.inf, np.nan], np.float32))
    v.check_finite(np.zeros(0, np.float32))
    with pytest.raises(ParameterInvalid, match=r"the 2th element \(-129\) out of range"):
        v.check_int_range(np.array([0, 127, -129]), -128, 127)
    with pytest.raises(ParameterInvalid, match="row number: 1, length: 4, max length: 3"):
        v.check_varchar_length(pa.array(["abc", "abcd", None]), 3, "s")
    with pytest.raises(ParameterInvalid, match=r"the length \(70000\) of dynamic field exceeds"):
        v.check_json_length(pa.array([b"{}", b"x" * 70000]), "$meta", dynamic=True)
    v.check_array_capacity(pa.array([[1, 2], None, []]), 2)
    with pytest.raises(ParameterInvalid, match=r"the length \(3\) of 0th array"):
        v.check_array_capacity(pa.array([[1, 2, 3]]), 2)
