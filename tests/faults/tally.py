"""The fault suite's verdict on one run: what was sent against what the ledger and the storage
hold, counted the same way by every scenario and by the soak (``bench/soak.py``).

``sent`` maps each recording's ledger ``recording_key`` to the sha256 of the bytes its emulator
serves (``None`` when the emulator made it permanently unavailable, so it must end ``failed``
with a reason). Objects are matched to recordings by content: every fault test uses random
bytes, so two objects holding one recording's bytes are a duplicate even under different keys.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callrec_commands.verify import Scope, ledger_problems, storage_problems
from ledger.models import Recording, State
from storage import Storage

#: Metadata records are ``<stem>.json`` beside the audio (``storage.metadata_key``).
METADATA_SUFFIX = ".json"


@dataclass
class Tally:
    sent: int = 0
    stored: int = 0
    failed_with_reason: int = 0
    duplicates: int = 0
    lost: int = 0
    hash_mismatches: int = 0
    unexpected_failures: int = 0
    #: Objects no ledger row accounts for, and ``callrec verify``'s other findings.
    verify_problems: list[str] = field(default_factory=list)
    open_multipart_uploads: int = 0
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for logs, RELIABILITY.md and the soak's output."""
        return (
            f"sent={self.sent} stored={self.stored} failed-with-reason={self.failed_with_reason} "
            f"duplicates={self.duplicates} lost={self.lost} hash-mismatches={self.hash_mismatches} "
            f"unexpected-failures={self.unexpected_failures} "
            f"verify-problems={len(self.verify_problems)} "
            f"open-multipart-uploads={self.open_multipart_uploads}"
        )

    @property
    def clean(self) -> bool:
        return (
            self.lost == 0
            and self.duplicates == 0
            and self.hash_mismatches == 0
            and self.unexpected_failures == 0
            and not self.verify_problems
            and self.open_multipart_uploads == 0
        )

    def assert_clean(self) -> None:
        findings = self.details[:40] + self.verify_problems[:40]
        assert self.clean, "\n".join([self.line(), *findings])


def _object_digests(storage: Storage) -> Counter[str]:
    """sha256 of every audio object (metadata records skipped) → how many objects hold it."""
    digests: Counter[str] = Counter()
    for stat in storage.list_objects(""):
        if stat.key.endswith(METADATA_SUFFIX):
            continue
        digest = hashlib.sha256()
        for chunk in storage.read(stat.key):
            digest.update(chunk)
        digests[digest.hexdigest()] += 1
    return digests


def open_multipart_uploads(s3_client: Any, bucket: str) -> int:
    """Multipart uploads begun and neither completed nor aborted (a killed writer's leftovers)."""
    response = s3_client.list_multipart_uploads(Bucket=bucket)
    return len(response.get("Uploads", []))


def tally(
    sessions: sessionmaker[Session],
    storage: Storage,
    sent: Mapping[str, str | None],
    *,
    s3: tuple[Any, str] | None = None,
) -> Tally:
    """Count the run. ``s3`` is ``(client, bucket)`` when the storage is S3."""
    result = Tally(sent=len(sent))
    with sessions() as session:
        rows = {
            row.recording_key: row
            for row in session.execute(
                select(Recording).where(Recording.recording_key.in_(list(sent)))
            ).scalars()
        }
    digests = _object_digests(storage)
    for key, expected in sent.items():
        row = rows.get(key)
        copies = digests.get(expected, 0) if expected is not None else 0
        if copies > 1:
            result.duplicates += copies - 1
            result.details.append(f"duplicate: {key} has {copies} objects")
        if row is not None and row.state == State.STORED:
            result.stored += 1
            if expected is None or row.sha256 != expected or copies == 0:
                result.hash_mismatches += 1
                result.details.append(f"hash mismatch: {key} ledger {row.sha256} source {expected}")
        elif row is not None and row.state == State.FAILED and row.last_error:
            result.failed_with_reason += 1
            if expected is not None:
                result.unexpected_failures += 1
                result.details.append(f"failed although available: {key}: {row.last_error}")
        else:
            result.lost += 1
            state = "no row" if row is None else f"state {row.state}"
            result.details.append(f"lost: {key} ({state})")
    scope = Scope()
    result.verify_problems = [
        str(problem)
        for check in (ledger_problems, storage_problems)
        for problem in check(sessions, storage, scope)
    ]
    if s3 is not None:
        result.open_multipart_uploads = open_multipart_uploads(*s3)
    return result
