"""S3ObjectStore construction and URI parsing: no network, no client is ever created."""

from __future__ import annotations

import pytest

from woodpecker.errors import InvalidArgument, StorageError
from woodpecker.objectstore import open_object_store
from woodpecker.objectstore.s3 import MiB, S3ObjectStore


@pytest.fixture(autouse=True)
def _no_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


def test_full_uri() -> None:
    store = S3ObjectStore.from_uri(
        "s3://canopy/wal/logs?endpoint=http://127.0.0.1:8333&region=us-east-1"
    )
    assert store.bucket == "canopy"
    assert store.prefix == "wal/logs/"
    assert store.endpoint_url == "http://127.0.0.1:8333"
    assert store.region == "us-east-1"
    assert store.addressing_style == "path"  # the default with an explicit endpoint
    assert store._client is None  # lazily created: constructing does no I/O


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [
        ("s3://b", ""),
        ("s3://b/", ""),
        ("s3://b/p", "p/"),
        ("s3://b/p/", "p/"),
        ("s3://b/a/b/c", "a/b/c/"),
    ],
)
def test_prefix_is_normalised_to_end_with_slash(uri: str, prefix: str) -> None:
    assert S3ObjectStore.from_uri(uri).prefix == prefix


def test_keys_are_prefixed_and_checked() -> None:
    store = S3ObjectStore("b", "p")
    assert store._full("1/0/0.blk") == "p/1/0/0.blk"
    assert S3ObjectStore("b")._full("k") == "k"
    for bad in ("", "/abs", "a\x00b"):
        with pytest.raises(InvalidArgument):
            store._full(bad)


def test_addressing_defaults_to_auto_without_endpoint() -> None:
    assert S3ObjectStore.from_uri("s3://b/p").addressing_style == "auto"
    assert S3ObjectStore.from_uri("s3://b/p?addressing=virtual").addressing_style == "virtual"
    assert (
        S3ObjectStore.from_uri("s3://b?endpoint=http://h:1&addressing=auto").addressing_style
        == "auto"
    )


def test_addressing_defaults_to_path_with_endpoint_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    store = S3ObjectStore.from_uri("s3://b/p")
    assert store.endpoint_url is None  # botocore resolves the environment itself
    assert store.addressing_style == "path"


def test_unknown_parameter_names_the_allowed_ones() -> None:
    with pytest.raises(InvalidArgument) as info:
        S3ObjectStore.from_uri("s3://b/p?endpoint=http://h:1&secret=x")
    message = str(info.value)
    assert "'secret'" in message
    for allowed in ("endpoint", "region", "addressing"):
        assert allowed in message


@pytest.mark.parametrize(
    "uri",
    [
        "file:///tmp/x",
        "s3:///prefix",  # no bucket
        "s3://key:secret@bucket/p",  # credentials never travel in the URI
        "s3://bucket:9000/p",
        "s3://b/p#frag",
        "s3://b//p",  # prefix would start with /
        "s3://b/p?endpoint=127.0.0.1:8333",  # endpoint needs a scheme
        "s3://b/p?endpoint=ftp://h",
        "s3://b/p?addressing=host",
        "s3://b/p?region=us-east-1&region=eu-west-1",
        "s3://b/p?region=",
    ],
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(InvalidArgument):
        S3ObjectStore.from_uri(uri)


def test_uri_round_trips() -> None:
    for uri in (
        "s3://b",
        "s3://b/p",
        "s3://b/a/b?endpoint=http://127.0.0.1:8333&region=us-east-1",
        "s3://b/p?addressing=virtual",
        "s3://b/p?endpoint=https://s3.example.com&addressing=virtual",
    ):
        store = S3ObjectStore.from_uri(uri)
        assert store.uri == uri
        again = S3ObjectStore.from_uri(store.uri)
        assert (again.bucket, again.prefix, again.endpoint_url, again.region) == (
            store.bucket,
            store.prefix,
            store.endpoint_url,
            store.region,
        )
        assert again.addressing_style == store.addressing_style


def test_uri_never_carries_credentials() -> None:
    store = S3ObjectStore("b", "p", access_key_id="AKIAEXAMPLE", secret_access_key="s3cr3t")
    assert "AKIAEXAMPLE" not in store.uri and "s3cr3t" not in store.uri
    assert "s3cr3t" not in repr(store)


def test_options_pass_through_from_uri() -> None:
    store = S3ObjectStore.from_uri(
        "s3://b/p",
        multipart_threshold=6 * MiB,
        part_size=5 * MiB,
        access_key_id="a",
        secret_access_key="s",
    )
    assert store.multipart_threshold == 6 * MiB and store.part_size == 5 * MiB


@pytest.mark.parametrize(
    "kwargs",
    [
        {"part_size": 1 * MiB},  # S3 rejects parts under 5 MiB (all but the last)
        {"multipart_threshold": 0},
        {"multipart_concurrency": 0},
        {"addressing_style": "sideways"},
        {"access_key_id": "only-the-id"},
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        S3ObjectStore("b", "p", **kwargs)  # type: ignore[arg-type]


def test_open_object_store_dispatches_to_s3() -> None:
    store = open_object_store("s3://b/p?endpoint=http://127.0.0.1:8333&region=us-east-1")
    assert isinstance(store, S3ObjectStore)
    assert store.prefix == "p/"


async def test_closed_store_refuses_work_without_connecting() -> None:
    store = S3ObjectStore.from_uri("s3://b/p?endpoint=http://127.0.0.1:1")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await store.head("k")
    assert store._client is None


async def test_zero_length_get_makes_no_request() -> None:
    store = S3ObjectStore.from_uri("s3://b/p?endpoint=http://127.0.0.1:1")
    assert await store.get("k", offset=10, length=0) == b""
    assert store._client is None
    with pytest.raises(InvalidArgument):
        await store.get("k", offset=-1)
