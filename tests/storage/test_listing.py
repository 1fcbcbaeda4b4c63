"""``list_objects`` and ``check`` on both backends: complete objects only, streamed, by prefix."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import Storage, StorageUnavailable, recording_key, storage_from_url
from storage.disk import PARTIAL_DIR

KEYS = [
    recording_key("telnyx", "default", "rec-1", "mp3"),
    recording_key("telnyx", "east", "rec-2", "mp3"),
    recording_key("twilio", "default", "RE3", "wav"),
]


@pytest.fixture(params=["disk", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "disk":
        yield storage_from_url(f"file://{tmp_path}/rec")
    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        yield storage_from_url(f"s3://{bucket}/recordings", s3_endpoint_url=endpoint)


def test_lists_every_object_with_size_and_time(store: Storage) -> None:
    for n, key in enumerate(KEYS):
        store.write(key, [b"x" * (n + 1)], content_type="audio/mpeg")
    listed = list(store.list_objects())
    assert sorted(item.key for item in listed) == sorted(KEYS)
    assert {item.key: item.size for item in listed} == {k: n + 1 for n, k in enumerate(KEYS)}
    now = datetime.now(UTC)
    for item in listed:
        assert item.modified is not None
        assert now - timedelta(minutes=5) < item.modified <= now + timedelta(seconds=5)
    assert [item.key for item in store.list_objects("telnyx/east/")] == [KEYS[1]]
    assert sorted(item.key for item in store.list_objects("telnyx/")) == sorted(KEYS[:2])
    assert list(store.list_objects("quo/")) == []
    with pytest.raises(ValueError):
        list(store.list_objects("telnyx"))  # a prefix is whole segments


def test_disk_listing_skips_partial_writes(tmp_path: Path) -> None:
    store = storage_from_url(f"file://{tmp_path}/rec")
    store.write(KEYS[0], [b"abc"], content_type="audio/mpeg")
    (tmp_path / "rec" / PARTIAL_DIR).mkdir(exist_ok=True)
    (tmp_path / "rec" / PARTIAL_DIR / "left.tmp").write_bytes(b"half")
    assert [item.key for item in store.list_objects()] == [KEYS[0]]


def test_check_passes_on_a_reachable_backend(store: Storage) -> None:
    store.check()


def test_check_fails_when_the_disk_root_is_gone(tmp_path: Path) -> None:
    store = storage_from_url(f"file://{tmp_path}/rec")
    (tmp_path / "rec").rmdir()
    with pytest.raises(StorageUnavailable):
        store.check()


@pytest.mark.s3
def test_check_fails_for_a_missing_bucket(moto_server: str) -> None:
    store = storage_from_url("s3://no-such-bucket-here/x", s3_endpoint_url=moto_server)
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        list(store.list_objects())
