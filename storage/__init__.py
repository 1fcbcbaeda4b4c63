"""Recording storage: one interface (``Storage``), a disk and an S3 backend, and the keys."""

from __future__ import annotations

from .base import (
    ObjectExists,
    ObjectStat,
    Storage,
    StorageError,
    StorageUnavailable,
    StorageUnreachable,
)
from .disk import DiskStorage
from .factory import storage_from_url
from .keys import check_key, metadata_key, recording_key
from .s3 import S3Storage

__all__ = [
    "DiskStorage",
    "ObjectExists",
    "ObjectStat",
    "S3Storage",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StorageUnreachable",
    "check_key",
    "metadata_key",
    "recording_key",
    "storage_from_url",
]
