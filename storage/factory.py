"""Build the configured backend from its URL (``CALLREC_STORAGE_URL``)."""

from __future__ import annotations

import logging
import os
from urllib.parse import unquote, urlsplit

from .base import Storage
from .disk import DiskStorage
from .s3 import DEFAULT_PART_SIZE, S3Storage

__all__ = ["storage_from_url"]

logger = logging.getLogger(__name__)


def storage_from_url(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str = "us-east-1",
    part_size: int = DEFAULT_PART_SIZE,
) -> Storage:
    """``file:///abs/path`` → ``DiskStorage`` (root created); ``s3://bucket/prefix`` → S3.

    Raises ``ValueError`` for anything else, so a typo fails at start-up, not at first capture.
    """
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment:
        raise ValueError(f"storage URL may not have a query or fragment: {url!r}")
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not os.path.isabs(path):
            raise ValueError(f"expected file:///absolute/path, got {url!r}")
        os.makedirs(path, exist_ok=True)
        return DiskStorage(path)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"expected s3://bucket/prefix, got {url!r}")
        return S3Storage(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=s3_endpoint_url,
            region=s3_region,
            part_size=part_size,
        )
    raise ValueError(f"expected file:///abs/path or s3://bucket/prefix, got {url!r}")
