"""S3 backend: conditional creates (``If-None-Match: *``) with bounded memory.

Objects smaller than one part go up in a single ``PutObject``; larger ones as a multipart upload,
which stays invisible until ``CompleteMultipartUpload`` and is aborted on any failure. Both final
requests carry ``If-None-Match: *`` so an existing object is never replaced.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .base import ObjectExists, ObjectStat, StorageError, StorageUnavailable, StorageUnreachable
from .keys import check_key, check_prefix

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3Storage", "make_s3_client"]

logger = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 8 * 1024 * 1024
#: S3's smallest allowed size of a part other than the last.
MIN_PART_SIZE = 5 * 1024 * 1024
_MAX_PART_SIZE = 5 * 1024**3
_MAX_PARTS = 10_000
_READ_CHUNK = 64 * 1024
#: A single PUT up to this size sends its body as bytes (one copy). A file-like body makes
#: botocore send ``Expect: 100-continue`` and wait for the interim answer before the body:
#: worth a round trip for a large body (a 412 arrives before it is sent), not for a small one.
_SMALL_PUT = 1024 * 1024
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
#: Error codes of an S3 that is up but overloaded (HTTP 503/500 carry them too).
_OUTAGE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})


def make_s3_client(*, endpoint_url: str | None, region: str, max_attempts: int = 5) -> Any:
    """A thread-safe S3 client with bounded timeouts and retries.

    Checksums only "when required": the flexible-checksum defaults of boto3 >= 1.36 send
    trailing checksums that several S3-compatible stores reject.
    """
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A private session: boto3's default session is not thread-safe to create clients from.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _is_outage(exc: Exception) -> bool:
    """No connection, a timeout or a cut, a 5xx or throttling: S3 itself is down, not the
    request wrong (a 4xx, missing credentials and bad parameters are not outages)."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = _http_status(exc)
        return _error_code(exc) in _OUTAGE_CODES or (status is not None and status >= 500)
    return False


def _md5(body: memoryview | bytearray) -> bytes:
    return hashlib.md5(body, usedforsecurity=False).digest()


def _check_etag(response: dict[str, Any], md5: bytes, what: str) -> None:
    """Raise if S3 stored other bytes than were sent (a byte corrupted in flight).

    S3 verifies the ``Content-MD5`` we send and answers 400 ``BadDigest``; S3-compatible stores
    that skip that check (moto) still return the MD5 of what they received as the ETag of a
    plain or SSE-S3 object, so it is compared too. SSE-KMS and SSE-C ETags are not MD5s.
    """
    if response.get("SSECustomerAlgorithm") or response.get("ServerSideEncryption") not in (
        None,
        "AES256",
    ):
        return
    etag = str(response.get("ETag", "")).strip('"')
    if len(etag) == 32 and etag != md5.hex():
        raise StorageUnavailable(
            f"S3 {what}: stored bytes differ from those sent (ETag {etag}, MD5 {md5.hex()}); "
            "corrupted in flight"
        )


class _PartReader(io.RawIOBase):
    """A seekable file over a memoryview: lets botocore stream a part without copying it.

    (bytes would need a copy of the reused part buffer; botocore re-seeks to 0 on retries.)
    """

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        out = memoryview(buffer).cast("B")
        n = max(0, min(len(out), len(self._view) - self._pos))
        out[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


class S3Storage:
    """Recordings under ``s3://bucket/prefix``; see ``storage.base`` for the contract."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None,
        region: str,
        part_size: int = DEFAULT_PART_SIZE,
        client: Any = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name: {bucket!r}")
        if not MIN_PART_SIZE <= part_size <= _MAX_PART_SIZE:
            raise ValueError(f"part_size must be between 5 MiB and 5 GiB, got {part_size}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client = client or make_s3_client(endpoint_url=endpoint_url, region=region)
        #: UploadId → when this process first listed it (``clean_partials``).
        self._first_seen: dict[str, datetime] = {}

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unavailable(self, action: str, key: str, exc: Exception) -> StorageUnavailable:
        kind = StorageUnreachable if _is_outage(exc) else StorageUnavailable
        return kind(f"S3 {action} failed for s3://{self.bucket}/{key}: {exc}")

    # -- write -------------------------------------------------------------------------------

    def write(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> int:
        """Create ``key`` from ``chunks``; ``ObjectExists`` if an object is already there.

        Memory: one part buffer (``part_size``) plus the chunk being copied into it, whatever
        the object's size.
        """
        s3_key = self._key(key)
        # Grows up to part_size while the first part fills (small objects stay small), then is
        # reused in place: never resized again, so views handed to botocore stay valid.
        part = bytearray()
        fill = 0
        size = 0
        upload_id: str | None = None
        etags: list[dict[str, Any]] = []
        try:
            for chunk in chunks:  # exceptions from the iterator propagate unchanged
                with memoryview(chunk) as raw, raw.cast("B") as data:
                    size += len(data)
                    pos = 0
                    while pos < len(data):
                        n = min(self.part_size - fill, len(data) - pos)
                        if fill == len(part):
                            part += data[pos : pos + n]
                        else:
                            part[fill : fill + n] = data[pos : pos + n]
                        fill += n
                        pos += n
                        if fill == self.part_size:
                            if upload_id is None:
                                upload_id = self._create_upload(s3_key, content_type)
                            etags.append(self._upload_part(key, s3_key, upload_id, etags, part))
                            fill = 0
            body = memoryview(part)[:fill]
            if upload_id is None:
                self._put(key, s3_key, body, content_type)
            else:
                if fill:
                    etags.append(self._upload_part(key, s3_key, upload_id, etags, body))
                self._complete(key, s3_key, upload_id, etags)
                upload_id = None  # completed: nothing left to abort
        except BaseException:
            if upload_id is not None:
                self._abort(s3_key, upload_id)
            raise
        logger.debug("stored %s (%d bytes) in %s", key, size, self.url)
        return size

    def _put(self, key: str, s3_key: str, body: memoryview, content_type: str) -> None:
        md5 = _md5(body)
        try:
            resp = self._client.put_object(
                Bucket=self.bucket,
                Key=s3_key,
                Body=bytes(body) if len(body) <= _SMALL_PUT else _PartReader(body),
                ContentLength=len(body),
                ContentMD5=base64.b64encode(md5).decode(),
                ContentType=content_type,
                IfNoneMatch="*",
            )
        except ClientError as exc:
            self._raise_conditional(key, s3_key, "put", exc)
        except BotoCoreError as exc:
            raise self._unavailable("put", s3_key, exc) from exc
        try:
            _check_etag(resp, md5, "put")
        except StorageUnavailable:
            self._delete_corrupt(s3_key)
            raise

    def _create_upload(self, s3_key: str, content_type: str) -> str:
        try:
            resp = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=s3_key, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("create-multipart-upload", s3_key, exc) from exc
        return str(resp["UploadId"])

    def _upload_part(
        self,
        key: str,
        s3_key: str,
        upload_id: str,
        done: list[dict[str, Any]],
        body: memoryview | bytearray,
    ) -> dict[str, Any]:
        number = len(done) + 1
        if number > _MAX_PARTS:
            raise StorageError(
                f"{key!r} needs more than {_MAX_PARTS} parts of {self.part_size} bytes"
            )
        md5 = _md5(body)
        try:
            resp = self._client.upload_part(
                Bucket=self.bucket,
                Key=s3_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=_PartReader(memoryview(body)),
                ContentLength=len(body),
                ContentMD5=base64.b64encode(md5).decode(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(f"upload-part {number}", s3_key, exc) from exc
        _check_etag(resp, md5, f"upload-part {number}")  # the upload is aborted by write()
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _complete(self, key: str, s3_key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        try:
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except ClientError as exc:
            self._raise_conditional(key, s3_key, "complete-multipart-upload", exc)
        except BotoCoreError as exc:
            raise self._unavailable("complete-multipart-upload", s3_key, exc) from exc

    def _raise_conditional(self, key: str, s3_key: str, action: str, exc: ClientError) -> NoReturn:
        """412 means the key exists; 409 (a concurrent conditional write) is retryable."""
        if _error_code(exc) == "PreconditionFailed" or _http_status(exc) == 412:
            raise ObjectExists(key) from exc
        raise self._unavailable(action, s3_key, exc) from exc

    def _delete_corrupt(self, s3_key: str) -> None:
        """Remove an object just created with corrupted bytes, so the retry can create it.

        Only reached right after our own conditional put created it (no one else's object).
        """
        try:
            self._client.delete_object(Bucket=self.bucket, Key=s3_key)
        except Exception:
            logger.error("could not delete corrupted object s3://%s/%s", self.bucket, s3_key)

    def _abort(self, s3_key: str, upload_id: str) -> None:
        """Best effort: a failed abort leaves an invisible upload for ``clean_partials``."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)
        except Exception:
            logger.warning(
                "could not abort multipart upload %s of s3://%s/%s",
                upload_id,
                self.bucket,
                s3_key,
                exc_info=True,
            )

    # -- read side ---------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectStat | None:
        s3_key = self._key(key)
        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=s3_key)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND or _http_status(exc) == 404:
                return None
            raise self._unavailable("head", s3_key, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("head", s3_key, exc) from exc
        return ObjectStat(key=key, size=int(resp["ContentLength"]))

    def read(self, key: str) -> Iterator[bytes]:
        """Stream ``key`` in 64 KiB chunks; ``FileNotFoundError`` here, not at first ``next``.

        Exhaust or ``close()`` the iterator: it holds an HTTP connection until then.
        """
        s3_key = self._key(key)
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=s3_key)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND or _http_status(exc) == 404:
                raise FileNotFoundError(f"no object under {key!r} in {self.url}") from exc
            raise self._unavailable("get", s3_key, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("get", s3_key, exc) from exc
        return self._stream(s3_key, resp["Body"])

    def _stream(self, s3_key: str, body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(_READ_CHUNK)
        except BotoCoreError as exc:
            raise self._unavailable("get (streaming)", s3_key, exc) from exc
        finally:
            body.close()

    def list_objects(self, prefix: str = "") -> Iterator[ObjectStat]:
        """Objects under ``prefix`` in key order, one ``ListObjectsV2`` page at a time."""
        check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        return self._list(base, base + prefix)

    def _list(self, base: str, s3_prefix: str) -> Iterator[ObjectStat]:
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=s3_prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectStat(
                        key=item["Key"][len(base) :],
                        size=int(item["Size"]),
                        modified=item["LastModified"],
                    )
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"S3 listing of {self.url} failed: {exc}") from exc

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"S3 bucket {self.bucket} unreachable: {exc}") from exc

    # -- maintenance -------------------------------------------------------------------------

    def discard_partials(self, key: str) -> int:
        """Abort every open multipart upload of ``key`` (a killed writer cannot abort its own)."""
        s3_key = self._key(key)
        aborted = 0
        try:
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=s3_key
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"] != s3_key:
                        continue  # a longer key sharing the prefix
                    self._abort_upload(upload["Key"], upload["UploadId"])
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("clean-up of multipart uploads", s3_key, exc) from exc
        return aborted

    def _abort_upload(self, s3_key: str, upload_id: str) -> None:
        """Abort one upload; one completed or aborted meanwhile is not an error."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise

    @staticmethod
    def _age(upload: dict[str, Any], first_seen: datetime, now: datetime) -> float:
        initiated = upload.get("Initiated")
        server_age = (now - initiated).total_seconds() if initiated else float("inf")
        return min(server_age, (now - first_seen).total_seconds())

    def clean_partials(self, older_than_seconds: float) -> int:
        """Abort multipart uploads under the prefix initiated at least that long ago.

        An upload's age is the smaller of the server's ``Initiated`` and the time since this
        process first listed it: a server clock that cannot be trusted (moto reports a fixed
        2010 date for every upload) must never make a live upload look abandoned; the cost is
        that a fresh process aborts nothing on its first call. ``0`` aborts every upload under
        the prefix: only pass it when no writer can be running.
        """
        now = datetime.now(UTC)
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.prefix:
            params["Prefix"] = self.prefix + "/"
        aborted = 0
        seen: dict[str, datetime] = {}
        try:
            pages = self._client.get_paginator("list_multipart_uploads").paginate(**params)
            for page in pages:
                for upload in page.get("Uploads", []):
                    upload_id = upload["UploadId"]
                    seen[upload_id] = self._first_seen.get(upload_id, now)
                    if older_than_seconds > 0 and self._age(upload, seen[upload_id], now) < (
                        older_than_seconds
                    ):
                        continue
                    self._abort_upload(upload["Key"], upload["UploadId"])
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(
                f"S3 clean-up of multipart uploads in {self.url} failed: {exc}"
            ) from exc
        self._first_seen = seen  # forget uploads that are gone: the map stays bounded
        if aborted:
            logger.info("aborted %d dangling multipart upload(s) in %s", aborted, self.url)
        return aborted
