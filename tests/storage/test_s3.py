"""S3Storage against a real (moto) S3 server over HTTP: conditional creates, aborts, clean-up."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from storage import (
    ObjectExists,
    ObjectStat,
    S3Storage,
    StorageUnavailable,
    StorageUnreachable,
    recording_key,
    storage_from_url,
)
from storage.s3 import MIN_PART_SIZE, _check_etag, make_s3_client

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
KEY = recording_key("telnyx", "acct-1", "rec-1", "wav")
PREFIX = "recordings/v1"

# One random block reused (with a varying first byte) keeps 12 MiB bodies cheap to make.
_BLOCK = os.urandom(MiB)


def payload(size: int, tag: int = 0) -> bytes:
    if size == 0:
        return b""
    data = bytes([tag]) + (_BLOCK * (size // MiB + 1))[1:size]
    assert len(data) == size
    return data


def chunked(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield bytes(view[i : i + size])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def raw(s3_bucket: tuple[str, str]) -> Any:
    endpoint, _ = s3_bucket
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def store(s3_bucket: tuple[str, str]) -> S3Storage:
    endpoint, bucket = s3_bucket
    return S3Storage(
        bucket, PREFIX, endpoint_url=endpoint, region="us-east-1", part_size=MIN_PART_SIZE
    )


def uploads(raw: Any, bucket: str) -> list[dict[str, Any]]:
    return list(raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def read_all(store: S3Storage, key: str) -> bytes:
    return b"".join(store.read(key))


SMALL = 300_000
LARGE = 12 * MiB + 12_345  # three parts of 5 MiB, 5 MiB and ~2 MiB


@pytest.mark.parametrize("size", [0, SMALL, MIN_PART_SIZE - 1, MIN_PART_SIZE, LARGE])
def test_round_trip(store: S3Storage, raw: Any, s3_bucket: tuple[str, str], size: int) -> None:
    _, bucket = s3_bucket
    data = payload(size)
    assert store.stat(KEY) is None
    assert store.write(KEY, chunked(data), content_type="audio/wav") == size
    assert store.stat(KEY) == ObjectStat(key=KEY, size=size)
    chunks = list(store.read(KEY))
    assert sha(b"".join(chunks)) == sha(data)
    assert all(len(c) <= 64 * 1024 for c in chunks)
    head = raw.head_object(Bucket=bucket, Key=f"{PREFIX}/{KEY}")
    assert head["ContentType"] == "audio/wav"
    # Multipart iff at least one full part: S3 marks multipart ETags with "-<parts>".
    assert ("-" in head["ETag"]) == (size >= MIN_PART_SIZE)
    assert uploads(raw, bucket) == []


def test_uneven_chunks_cross_part_boundaries(store: S3Storage) -> None:
    data = payload(LARGE, tag=7)
    sizes = [1, 3 * MiB + 7, 17, 4 * MiB, 1, 5 * MiB]

    def odd() -> Iterator[bytes]:
        pos, i = 0, 0
        while pos < len(data):
            n = sizes[i % len(sizes)]
            yield data[pos : pos + n]
            pos, i = pos + n, i + 1

    assert store.write(KEY, odd(), content_type="audio/mpeg") == len(data)
    assert sha(read_all(store, KEY)) == sha(data)


def test_empty_prefix_has_no_leading_slash(s3_bucket: tuple[str, str], raw: Any) -> None:
    endpoint, bucket = s3_bucket
    store = S3Storage(bucket, "", endpoint_url=endpoint, region="us-east-1")
    assert store.url == f"s3://{bucket}/"
    store.write(KEY, [b"x"], content_type="audio/wav")
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [KEY]


# moto >= 5.1.12 (PR #9209) checks If-None-Match on CompleteMultipartUpload, also when the existing
# object was itself created by a multipart upload. Every first/second combination is covered.
@pytest.mark.parametrize("first", [SMALL, LARGE], ids=["first-put", "first-multipart"])
@pytest.mark.parametrize("second", [SMALL, LARGE], ids=["second-put", "second-multipart"])
def test_conditional_write_refused(
    store: S3Storage, raw: Any, s3_bucket: tuple[str, str], first: int, second: int
) -> None:
    _, bucket = s3_bucket
    original = payload(first, tag=1)
    store.write(KEY, chunked(original), content_type="audio/wav")
    with pytest.raises(ObjectExists) as info:
        store.write(KEY, chunked(payload(second, tag=2)), content_type="audio/wav")
    assert info.value.key == KEY
    assert sha(read_all(store, KEY)) == sha(original)
    assert store.stat(KEY) == ObjectStat(key=KEY, size=first)
    assert uploads(raw, bucket) == []  # the refused multipart upload was aborted


def test_iterator_failure_mid_multipart_aborts(
    store: S3Storage, raw: Any, s3_bucket: tuple[str, str]
) -> None:
    _, bucket = s3_bucket

    class SourceGone(Exception):
        pass

    def failing() -> Iterator[bytes]:
        yield from chunked(payload(7 * MiB))  # one part uploaded, the second half-filled
        raise SourceGone("provider closed the stream")

    with pytest.raises(SourceGone, match="provider closed"):
        store.write(KEY, failing(), content_type="audio/wav")
    assert uploads(raw, bucket) == []
    assert store.stat(KEY) is None
    with pytest.raises(FileNotFoundError):
        store.read(KEY)
    # The key is still free.
    assert store.write(KEY, [b"retry"], content_type="audio/wav") == 5


def test_iterator_failure_before_first_part(
    store: S3Storage, raw: Any, s3_bucket: tuple[str, str]
) -> None:
    _, bucket = s3_bucket

    def failing() -> Iterator[bytes]:
        yield b"x" * 1000
        raise ConnectionResetError("peer reset")

    with pytest.raises(ConnectionResetError):
        store.write(KEY, failing(), content_type="audio/wav")
    assert store.stat(KEY) is None
    assert uploads(raw, bucket) == []


def _unused_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_endpoint_is_unavailable(moto_server: str) -> None:
    endpoint = f"http://127.0.0.1:{_unused_loopback_port()}"
    # One attempt: the production client's standard-mode backoff would only slow the test down.
    client = make_s3_client(endpoint_url=endpoint, region="us-east-1", max_attempts=1)
    store = S3Storage("bucket", PREFIX, endpoint_url=endpoint, region="us-east-1", client=client)
    with pytest.raises(StorageUnreachable) as info:  # an outage: captures do not spend attempts
        store.write(KEY, [b"x" * 100], content_type="audio/wav")
    assert info.value.__cause__ is not None
    with pytest.raises(StorageUnreachable):
        store.write(KEY, chunked(payload(6 * MiB)), content_type="audio/wav")
    with pytest.raises(StorageUnavailable):
        store.stat(KEY)
    with pytest.raises(StorageUnavailable):
        store.read(KEY)
    with pytest.raises(StorageUnavailable):
        store.clean_partials(0)


def test_missing_bucket_is_unavailable(moto_server: str) -> None:
    store = S3Storage("no-such-bucket-here", PREFIX, endpoint_url=moto_server, region="us-east-1")
    with pytest.raises(StorageUnavailable) as info:
        store.write(KEY, [b"x"], content_type="audio/wav")
    assert not isinstance(info.value, StorageUnreachable)  # a 4xx is not an outage: counted


def test_etag_other_than_the_md5_sent_is_corruption() -> None:
    """S3 answers the MD5 of what it received as the ETag of a plain or SSE-S3 object."""
    md5 = hashlib.md5(b"sent", usedforsecurity=False).digest()
    _check_etag({"ETag": f'"{md5.hex()}"'}, md5, "put")
    _check_etag({"ETag": f'"{md5.hex()}"', "ServerSideEncryption": "AES256"}, md5, "put")
    received = hashlib.md5(b"senT", usedforsecurity=False).hexdigest()
    with pytest.raises(StorageUnavailable, match="corrupted in flight") as info:
        _check_etag({"ETag": f'"{received}"'}, md5, "upload-part 1")
    assert not isinstance(info.value, StorageUnreachable)
    # SSE-KMS / SSE-C ETags are not MD5s: S3's own Content-MD5 check is what protects them.
    _check_etag({"ETag": f'"{received}"', "ServerSideEncryption": "aws:kms"}, md5, "put")
    _check_etag({"ETag": f'"{received}"', "SSECustomerAlgorithm": "AES256"}, md5, "put")


def test_writes_carry_content_md5_and_moto_etag_matches(store: S3Storage, raw: Any) -> None:
    """Both write paths send Content-MD5; the check passes on an uncorrupted write."""
    store.write(KEY, [b"small"], content_type="audio/wav")
    store.write(KEY + "2", chunked(payload(6 * MiB)), content_type="audio/wav")
    assert store.stat(KEY + "2") == ObjectStat(key=KEY + "2", size=6 * MiB)


def test_clean_partials_aborts_dangling_uploads_under_prefix(
    store: S3Storage, raw: Any, s3_bucket: tuple[str, str]
) -> None:
    _, bucket = s3_bucket
    # A writer that died after uploading a part, and an upload outside our prefix.
    dangling = raw.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/{KEY}")["UploadId"]
    raw.upload_part(
        Bucket=bucket, Key=f"{PREFIX}/{KEY}", UploadId=dangling, PartNumber=1, Body=b"x" * 100
    )
    raw.create_multipart_upload(Bucket=bucket, Key="other/thing.wav")

    # moto reports every upload as initiated in 2010: only the time since this process first
    # listed it may make it old, so a live upload is never aborted on the server's word.
    assert store.clean_partials(0.5) == 0
    assert len(uploads(raw, bucket)) == 2
    time.sleep(0.6)
    assert store.clean_partials(0.5) == 1
    assert [u["Key"] for u in uploads(raw, bucket)] == ["other/thing.wav"]
    assert store.clean_partials(0.5) == 0
    assert store.stat(KEY) is None


def test_factory_s3_url(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    store = storage_from_url(
        f"s3://{bucket}/{PREFIX}/", s3_endpoint_url=endpoint, part_size=6 * MiB
    )
    assert isinstance(store, S3Storage)
    assert (store.bucket, store.prefix, store.part_size) == (bucket, PREFIX, 6 * MiB)
    assert store.url == f"s3://{bucket}/{PREFIX}"
    store.write(KEY, [b"via factory"], content_type="audio/wav")
    assert read_all(store, KEY) == b"via factory"


def test_part_size_bounds() -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3Storage("b", "", endpoint_url=None, region="us-east-1", part_size=MIN_PART_SIZE - 1)


def test_discard_partials_aborts_that_keys_uploads_only(
    store: S3Storage, raw: Any, s3_bucket: tuple[str, str]
) -> None:
    """What killed writers of one key left open, whatever the server says of their age."""
    _, bucket = s3_bucket
    for key in (KEY, KEY, f"{KEY}2", recording_key("telnyx", "acct-1", "rec-2", "wav")):
        raw.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/{key}")
    assert store.discard_partials(KEY) == 2
    assert sorted(u["Key"] for u in uploads(raw, bucket)) == sorted(
        [f"{PREFIX}/{KEY}2", f"{PREFIX}/{recording_key('telnyx', 'acct-1', 'rec-2', 'wav')}"]
    )
    assert store.discard_partials(KEY) == 0
