"""DiskStorage: atomic, never-replacing creates; nothing partial is ever visible under a key."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import (
    DiskStorage,
    ObjectExists,
    ObjectStat,
    StorageUnavailable,
    recording_key,
    storage_from_url,
)
from storage.disk import PARTIAL_DIR

KEY = recording_key("telnyx", "acct-1", "rec-1", "wav")


def chunked(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def partials(root: Path) -> list[str]:
    partial = root / PARTIAL_DIR
    return sorted(os.listdir(partial)) if partial.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> DiskStorage:
    return DiskStorage(tmp_path / "rec")


def test_round_trip(store: DiskStorage) -> None:
    data = os.urandom(300_001)
    assert store.stat(KEY) is None
    assert store.write(KEY, chunked(data), content_type="audio/wav") == len(data)
    assert store.stat(KEY) == ObjectStat(key=KEY, size=len(data))
    chunks = list(store.read(KEY))
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= 64 * 1024
    assert partials(Path(store.root)) == []
    assert store.url == Path(store.root).as_uri()
    assert store.url.startswith("file:///")


def test_empty_object(store: DiskStorage) -> None:
    assert store.write(KEY, [], content_type="audio/wav") == 0
    assert store.stat(KEY) == ObjectStat(key=KEY, size=0)
    assert list(store.read(KEY)) == []


def test_second_write_refused_original_untouched(store: DiskStorage) -> None:
    store.write(KEY, [b"original"], content_type="audio/wav")
    with pytest.raises(ObjectExists) as info:
        store.write(KEY, [b"replacement, longer"], content_type="audio/wav")
    assert info.value.key == KEY
    assert b"".join(store.read(KEY)) == b"original"
    assert partials(Path(store.root)) == []


def test_iterator_failure_leaves_nothing(store: DiskStorage) -> None:
    class Boom(Exception):
        pass

    def failing() -> Iterator[bytes]:
        yield b"a" * 10_000
        yield b"b" * 10_000
        raise Boom("source went away")

    with pytest.raises(Boom, match="source went away"):
        store.write(KEY, failing(), content_type="audio/wav")
    assert store.stat(KEY) is None
    assert not (Path(store.root) / KEY).exists()
    assert partials(Path(store.root)) == []
    # The key is still free for a retry.
    assert store.write(KEY, [b"retry"], content_type="audio/wav") == 5


def test_iterator_oserror_propagates_unchanged(store: DiskStorage) -> None:
    def failing() -> Iterator[bytes]:
        yield b"x"
        raise ConnectionResetError("peer reset")

    with pytest.raises(ConnectionResetError):
        store.write(KEY, failing(), content_type="audio/wav")
    assert partials(Path(store.root)) == []


def test_concurrent_writers_exactly_one_wins(store: DiskStorage) -> None:
    writers = 8
    barrier = threading.Barrier(writers, timeout=10)
    results: dict[int, str] = {}

    def body(i: int) -> Iterator[bytes]:
        barrier.wait()
        for _ in range(20):
            yield bytes([i]) * 4096

    def run(i: int) -> None:
        try:
            store.write(KEY, body(i), content_type="audio/wav")
            results[i] = "ok"
        except ObjectExists:
            results[i] = "exists"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [i for i, r in results.items() if r == "ok"]
    assert len(results) == writers
    assert len(winners) == 1
    assert b"".join(store.read(KEY)) == bytes([winners[0]]) * 4096 * 20
    assert partials(Path(store.root)) == []


@pytest.mark.parametrize(
    "bad", ["../x", "a/../../x", "/etc/passwd", "a//b", "", "a\x00b", f"{PARTIAL_DIR}/x"]
)
def test_keys_outside_root_refused(store: DiskStorage, bad: str) -> None:
    with pytest.raises(ValueError):
        store.write(bad, [b"x"], content_type="audio/wav")
    with pytest.raises(ValueError):
        store.stat(bad)
    with pytest.raises(ValueError):
        store.read(bad)


def test_symlink_escape_refused(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "telnyx").symlink_to(outside, target_is_directory=True)
    store = DiskStorage(root)
    with pytest.raises(ValueError, match="outside the root"):
        store.write(KEY, [b"x"], content_type="audio/wav")
    assert list(outside.iterdir()) == []
    assert partials(root) == []


def test_read_missing_raises_at_call(store: DiskStorage) -> None:
    with pytest.raises(FileNotFoundError):
        store.read(KEY)
    # A fan-out directory is not an object.
    store.write(KEY, [b"x"], content_type="audio/wav")
    directory = KEY.rsplit("/", 1)[0]
    assert store.stat(directory) is None
    with pytest.raises(FileNotFoundError):
        store.read(directory)


def test_unwritable_root_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    store = DiskStorage(blocker)
    with pytest.raises(StorageUnavailable) as info:
        store.write(KEY, [b"x"], content_type="audio/wav")
    assert isinstance(info.value.__cause__, OSError)


def test_clean_partials_honours_age(store: DiskStorage) -> None:
    partial = Path(store.root) / PARTIAL_DIR
    assert store.clean_partials(0) == 0  # no .partial dir yet
    partial.mkdir(parents=True)
    old, fresh = partial / "old.tmp", partial / "fresh.tmp"
    old.write_bytes(b"o")
    fresh.write_bytes(b"f")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    store.write(KEY, [b"kept"], content_type="audio/wav")

    assert store.clean_partials(600) == 1
    assert partials(Path(store.root)) == ["fresh.tmp"]
    assert store.clean_partials(0) == 1
    assert partials(Path(store.root)) == []
    assert b"".join(store.read(KEY)) == b"kept"


def test_factory_file_url(tmp_path: Path) -> None:
    root = tmp_path / "made by factory"
    store = storage_from_url(root.as_uri())
    assert isinstance(store, DiskStorage)
    assert root.is_dir()
    assert store.url == root.as_uri()
    store.write(KEY, [b"x"], content_type="audio/wav")
    assert (root / KEY).read_bytes() == b"x"


@pytest.mark.parametrize(
    "url", ["file://host/x", "file:relative", "ftp://x/y", "/abs/path", "s3://", "file:///x?y=1"]
)
def test_factory_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        storage_from_url(url)


def test_discard_partials_removes_that_keys_temp_files_only(store: DiskStorage) -> None:
    """A writer killed mid-write leaves its temp file; the next writer of the key (holding the
    row's claim) finds it by name."""
    partial = Path(store.root) / PARTIAL_DIR
    seen: list[str] = []

    def chunks() -> Iterator[bytes]:
        yield b"first"
        seen.extend(partials(Path(store.root)))
        yield b"second"

    store.write(KEY, chunks(), content_type="audio/wav")
    (leftover,) = seen
    (partial / leftover).write_bytes(b"half")  # as a SIGKILLed writer would leave it
    (partial / f"{leftover[:17]}x.tmp").write_bytes(b"half")
    (partial / "unrelated.tmp").write_bytes(b"half")

    assert store.discard_partials(KEY) == 2
    assert partials(Path(store.root)) == ["unrelated.tmp"]
    assert store.discard_partials(KEY) == 0
