"""The one storage interface; every backend (disk, S3) implements it.

Contract, shared by all backends:

* ``write`` is a *conditional, atomic, streamed* create: the object appears under ``key`` whole
  or not at all, never replaces an existing object (``ObjectExists`` instead), and holds at most
  one part's worth of bytes in memory whatever the object's size. If the ``chunks`` iterator
  raises, the partial data is discarded (disk: temp file removed; S3: multipart upload aborted)
  and the exception propagates unchanged.
* Partial data never appears under or beside a recording's key: disk temp files live in
  ``<root>/.partial/``; S3 uses multipart uploads (invisible until completed).
* Errors talking to the backend are raised as ``StorageUnavailable`` (retry later), outages of
  the backend as its subclass ``StorageUnreachable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "ObjectExists",
    "ObjectStat",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StorageUnreachable",
]


class StorageError(Exception):
    """Base of storage errors."""


class ObjectExists(StorageError):
    """A conditional write found an object already under the key; nothing was replaced."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object already exists: {key}")
        self.key = key


class StorageUnavailable(StorageError):
    """The backend could not be reached or refused the request; the write can be retried."""


class StorageUnreachable(StorageUnavailable):
    """An outage of the storage itself (no connection, a timeout, a 5xx or throttling), not a
    problem of this object: the capture waits it out without spending an attempt."""


@dataclass(frozen=True)
class ObjectStat:
    key: str
    size: int
    #: When the object was written (listing only; None from ``stat``).
    modified: datetime | None = None


class Storage(Protocol):
    """Where recordings and their metadata records end up."""

    #: ``file:///abs/path`` or ``s3://bucket/prefix``; for logs and the metadata record.
    url: str

    def write(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> int:
        """Create ``key`` from ``chunks``; return the byte count. Raises ``ObjectExists``."""
        ...

    def stat(self, key: str) -> ObjectStat | None:
        """The object's size, or None when there is no object under ``key``."""
        ...

    def read(self, key: str) -> Iterator[bytes]:
        """Stream the object's bytes in bounded chunks; ``FileNotFoundError`` if absent."""
        ...

    def clean_partials(self, older_than_seconds: float) -> int:
        """Remove leftovers of interrupted writes older than the given age; return the count."""
        ...

    def discard_partials(self, key: str) -> int:
        """Remove the leftovers of earlier, interrupted writes of ``key``; return the count.

        Only for a caller that knows no other write of ``key`` is running (a capture holding
        the row's claim: earlier holders are dead). Ages play no part, so it holds even where
        the server's timestamps cannot be trusted."""
        ...

    def list_objects(self, prefix: str = "") -> Iterator[ObjectStat]:
        """Every complete object whose key starts with ``prefix`` (``""`` or ending in ``/``),
        streamed (bounded memory: one directory or one listing page at a time), never partial
        writes. Raises ``StorageUnavailable``."""
        ...

    def check(self) -> None:
        """Raise ``StorageUnavailable`` unless the backend answers and the root/bucket exists."""
        ...
