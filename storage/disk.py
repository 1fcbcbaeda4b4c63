"""Local-filesystem backend: atomic, never-replacing creates via ``os.link``.

A write streams into ``<root>/.partial/<key digest>-<uuid>.tmp``, is fsynced, and is then
hard-linked to its final name. ``link`` fails if the name exists, so two writers of one key cannot
both win and an existing recording is never replaced, and a reader never sees a half-written file
under a key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from .base import ObjectExists, ObjectStat, StorageUnavailable
from .keys import check_key, check_prefix

__all__ = ["PARTIAL_DIR", "DiskStorage"]

logger = logging.getLogger(__name__)

#: Directory under the root holding in-flight writes; never a valid first key segment.
PARTIAL_DIR = ".partial"
_READ_CHUNK = 64 * 1024


@contextmanager
def _unavailable(action: str, key: str) -> Iterator[None]:
    """Turn filesystem errors into ``StorageUnavailable`` (the caller retries)."""
    try:
        yield
    except OSError as exc:
        raise StorageUnavailable(f"disk {action} failed for {key!r}: {exc}") from exc


def _partial_stem(key: str) -> str:
    """The start of every temp file name of ``key``'s writes: the key's digest, so the leftovers
    of one key can be found (``discard_partials``) without reading them."""
    return hashlib.sha256(key.encode()).hexdigest()[:16] + "-"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Start writing dirty pages to disk every few MiB while the download goes on, so the final
# fsync has little left to do (bench/capture.py: the fsync of 100 MiB went from ~30 ms to ~2 ms).
WRITEBACK_BYTES = 8 * 1024 * 1024


def _start_writeback(f: BinaryIO, start: int, end: int) -> None:
    """Ask the kernel to begin writeback of [start, end) without waiting for it."""
    if hasattr(os, "posix_fadvise"):
        f.flush()
        os.posix_fadvise(f.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)


class DiskStorage:
    """Recordings under one root directory; see ``storage.base`` for the contract."""

    def __init__(self, root: Path | str) -> None:
        self.root = os.path.realpath(root)
        self.url = Path(self.root).as_uri()
        self._partial = os.path.join(self.root, PARTIAL_DIR)

    def __repr__(self) -> str:
        return f"DiskStorage({self.url!r})"

    def _path(self, key: str) -> str:
        """The file path of ``key``; ``ValueError`` if it could land outside the root."""
        check_key(key)
        if key.split("/", 1)[0] == PARTIAL_DIR:
            raise ValueError(f"storage key may not be under {PARTIAL_DIR}/: {key!r}")
        path = os.path.join(self.root, *key.split("/"))
        # realpath follows symlinks planted anywhere along the way.
        if os.path.commonpath([os.path.realpath(path), self.root]) != self.root:
            raise ValueError(f"storage key resolves outside the root: {key!r}")
        return path

    def write(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> int:
        """Create ``key`` from ``chunks`` atomically; ``ObjectExists`` if anything is there.

        ``content_type`` is not stored: the metadata record beside the audio carries it.
        """
        final = self._path(key)
        parent = os.path.dirname(final)
        tmp = os.path.join(self._partial, f"{_partial_stem(key)}{uuid.uuid4().hex}.tmp")
        with _unavailable("open", key):
            os.makedirs(self._partial, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        size = 0
        written_back = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:  # exceptions from the iterator propagate unchanged
                    with _unavailable("write", key):
                        f.write(chunk)
                        size += len(chunk)
                        if size - written_back >= WRITEBACK_BYTES:
                            _start_writeback(f, written_back, size)
                            written_back = size
                with _unavailable("fsync", key):
                    f.flush()
                    os.fsync(f.fileno())
            with _unavailable("link", key):
                created = self._makedirs(parent)
                # Re-check after creating directories: a symlink could have appeared meanwhile.
                self._path(key)
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    raise ObjectExists(key) from None
                for directory in [parent, *created]:
                    _fsync_dir(directory)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            except OSError:
                logger.warning("could not remove temp file %s", tmp, exc_info=True)
        logger.debug("stored %s (%d bytes) in %s", key, size, self.url)
        return size

    def _makedirs(self, parent: str) -> list[str]:
        """Create ``parent`` and its missing ancestors; return the dirs whose entries changed."""
        missing: list[str] = []
        path = parent
        while path != self.root and not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        if not missing:
            return []
        os.makedirs(parent, exist_ok=True)
        # A new directory's entry lives in its parent: fsync up to the first one that existed.
        return [os.path.dirname(p) for p in missing]

    def stat(self, key: str) -> ObjectStat | None:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageUnavailable(f"disk stat failed for {key!r}: {exc}") from exc
        if not S_ISREG(st.st_mode):
            return None  # e.g. a key naming one of the fan-out directories
        return ObjectStat(key=key, size=st.st_size)

    def read(self, key: str) -> Iterator[bytes]:
        """Stream ``key`` in 64 KiB chunks; ``FileNotFoundError`` here, not at first ``next``."""
        path = self._path(key)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no object under {key!r} in {self.url}")
        return self._read(path)

    @staticmethod
    def _read(path: str) -> Iterator[bytes]:
        with open(path, "rb") as f:
            while chunk := f.read(_READ_CHUNK):
                yield chunk

    def clean_partials(self, older_than_seconds: float) -> int:
        """Delete temp files of interrupted writes last modified at least that long ago.

        ``0`` removes every temp file: only pass it when no writer can be running.
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        try:
            entries = list(os.scandir(self._partial))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageUnavailable(f"cannot list {self._partial}: {exc}") from exc
        for entry in entries:
            try:
                if older_than_seconds > 0 and entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue  # finished or cleaned by someone else meanwhile
            except OSError:
                logger.warning("could not remove partial %s", entry.path, exc_info=True)
                continue
            removed += 1
        if removed:
            logger.info("removed %d partial write(s) from %s", removed, self._partial)
        return removed

    def discard_partials(self, key: str) -> int:
        """Delete the temp files of earlier writes of ``key`` (named after it, see ``write``)."""
        stem = _partial_stem(key)
        removed = 0
        try:
            entries = [e for e in os.scandir(self._partial) if e.name.startswith(stem)]
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageUnavailable(f"cannot list {self._partial}: {exc}") from exc
        for entry in entries:
            with suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        return removed

    def list_objects(self, prefix: str = "") -> Iterator[ObjectStat]:
        """Files under ``prefix``, depth first, each directory's entries sorted; never
        ``.partial/``. Memory: the entries of the directories on the current path."""
        check_prefix(prefix)
        start = self._path(prefix.rstrip("/")) if prefix else self.root
        return self._walk(start, prefix)

    def _walk(self, directory: str, key_prefix: str) -> Iterator[ObjectStat]:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageUnavailable(f"cannot list {directory}: {exc}") from exc
        for entry in entries:
            if not key_prefix and entry.name == PARTIAL_DIR:
                continue
            key = key_prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from self._walk(entry.path, key + "/")
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    modified = datetime.fromtimestamp(st.st_mtime, UTC)
                    yield ObjectStat(key=key, size=st.st_size, modified=modified)
            except FileNotFoundError:
                continue  # removed while listing
            except OSError as exc:
                raise StorageUnavailable(f"cannot list {entry.path}: {exc}") from exc

    def check(self) -> None:
        if not os.path.isdir(self.root) or not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"{self.root} is not a writable directory")
