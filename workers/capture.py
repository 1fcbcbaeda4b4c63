"""One capture attempt: claim → fresh URL → streamed, hashed download → conditional write → done.

Exactly once comes from three gates, each enough for a different failure:

1. ``ledger.claim``: one attempt per row at a time (duplicate messages, redeliveries, the
   sweeper re-publishing) — the others return at once;
2. the storage's conditional create: if two attempts still overlap (a lease expired under a
   slow worker), the second write is refused, never a replacement;
3. the metadata record is written after the audio and only if absent, so a record always
   describes a complete object, and a retry that finds the object with the same sha256
   counts as stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from celery.exceptions import SoftTimeLimitExceeded

from config.logging import log_context
from config.metrics import metrics
from config.sentry import report_final_failure
from ledger import State, accept_refs, claim, finish, release_for_retry
from ledger.claims import Claim, defer
from ledger.models import Source, utcnow
from providers.base import Download, Provider
from providers.errors import (
    CaptureError,
    ConfigurationMissing,
    NothingToCapture,
    PermanentFailure,
    RetryLater,
    UrlExpired,
)
from storage import (
    ObjectExists,
    StorageUnavailable,
    StorageUnreachable,
    metadata_key,
    recording_key,
)
from workers.download import StreamCut, open_audio
from workers.ratelimits import note_rate_limit
from workers.runtime import Runtime
from workers.shutdown import ShuttingDown, interruptible

__all__ = ["CaptureOutcome", "capture"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureOutcome:
    """What one task run did: ``state`` is the row's state afterwards (or ``skipped``)."""

    state: str
    detail: str | None = None
    retry_in: float | None = None


def capture(runtime: Runtime, recording_id: int) -> CaptureOutcome:
    """Run one attempt for the ledger row ``recording_id`` (the body of the Celery task)."""
    lease = timedelta(seconds=runtime.settings.stuck_after_seconds)
    held = claim(runtime.sessions, recording_id, lease)
    if held is None:
        with log_context(recording=recording_id):
            logger.debug("recording %s not claimable (final, busy or not due)", recording_id)
        return CaptureOutcome("skipped")
    with log_context(
        recording=held.id, provider=held.provider, account=held.account, attempt=held.attempt
    ):
        try:
            if held.paused_until is not None:  # read in the claim's transaction
                return _defer(runtime, held, held.paused_until)
            metrics().captures_started.labels(held.provider, held.account).inc()
            provider = runtime.accounts.provider(held.provider, held.account)
            if held.kind == "lookup":
                return _resolve(runtime, provider, held)
            return _capture_audio(runtime, provider, held)
        except PermanentFailure as exc:
            return _fail(runtime, held, exc.reason, exc.code)
        except (RetryLater, UrlExpired) as exc:
            if isinstance(exc, RetryLater):
                note_rate_limit(runtime.sessions, held.provider, held.account, exc)
            return _retry(runtime, held, exc.reason, getattr(exc, "retry_after", None))
        except ConfigurationMissing as exc:
            return _retry(runtime, held, f"not configured: {exc}", None)
        except StorageUnreachable as exc:
            return _wait_out_outage(runtime, held, f"storage unreachable: {exc}")
        except StorageUnavailable as exc:
            return _retry(runtime, held, f"storage unavailable: {exc}", None)
        except ShuttingDown:
            return _release(runtime, held)
        except SoftTimeLimitExceeded:
            return _retry(runtime, held, "attempt exceeded the task time limit", None)
        except Exception as exc:  # an unexpected bug must not lose the row: retry, then fail
            logger.exception("capture attempt crashed")
            return _retry(runtime, held, f"internal error: {type(exc).__name__}", None)


def _capture_audio(runtime: Runtime, provider: Provider, held: Claim) -> CaptureOutcome:
    settings = runtime.settings
    last: CaptureError | None = None
    for _refresh in range(settings.url_refreshes + 1):
        download = provider.fetch_recording(held.recording_key, held.hints)
        key = recording_key(held.provider, held.account, held.recording_key, download.format)
        if _refresh == 0 and held.attempt > 1:
            _discard_partials(runtime, key)
        try:
            with interruptible():
                size, sha256, host, created = _store_audio(runtime, provider, download, key)
        except (UrlExpired, StreamCut) as exc:
            logger.info("audio download failed, fetching a fresh URL: %s", exc.reason)
            metrics().url_refreshes.labels(held.provider, held.account).inc()
            last = exc
            continue
        record = _metadata_record(held, download, key, size, sha256, host)
        _write_metadata(runtime, key, record)
        if not finish(
            runtime.sessions,
            held,
            State.STORED,
            storage_key=key,
            size_bytes=size,
            sha256=sha256,
            last_error=None,
        ):
            # Another attempt took the row over (this one outlived its lease, e.g. a Redis
            # redelivery after visibility_timeout): the object is the same bytes, and the row
            # and the metrics are the holder's to record.
            logger.warning("claim lost while storing; the attempt holding the row records it")
            return CaptureOutcome("skipped", "claim lost")
        logger.info("stored %s bytes sha256=%s", size, sha256[:12])
        _count_stored(runtime, held, download, key, size, created)
        return CaptureOutcome(State.STORED)
    assert last is not None
    raise RetryLater(f"{last.reason} (after {settings.url_refreshes} fresh URLs)")


class _Stored(NamedTuple):
    size: int
    sha256: str
    host: str
    created: bool  # this attempt's conditional create made the object (else an earlier one)


def _store_audio(runtime: Runtime, provider: Provider, download: Download, key: str) -> _Stored:
    """Stream the audio into storage."""
    settings = runtime.settings
    with open_audio(
        runtime.http, download, provider.account.audio_hosts, settings.max_recording_bytes
    ) as stream:
        try:
            runtime.storage.write(key, stream.chunks(), content_type=download.content_type)
            created = True
        except ObjectExists:
            _check_existing(runtime, key, stream.size, stream.sha256)
            created = False
        # Download.expected_size was checked by the stream itself (SizeMismatch), before the
        # storage committed anything: a wrong size never leaves an object under the key.
        return _Stored(stream.size, stream.sha256, stream.host, created)


def _discard_partials(runtime: Runtime, key: str) -> None:
    """Abort what earlier attempts left half-written under ``key`` (a SIGKILLed or OOM-killed
    pool child cannot abort its own multipart upload). Safe because this attempt holds the
    claim: every earlier holder has outlived its lease, hence its hard time limit, and is dead.
    Not by age: S3-compatible servers need not report a true ``Initiated`` (moto does not)."""
    try:
        discarded = runtime.storage.discard_partials(key)
    except StorageUnavailable as exc:  # the write below will tell whether storage is down
        logger.warning("could not discard partial writes of earlier attempts: %s", exc)
        return
    if discarded:
        logger.info("discarded %s partial writes left by earlier attempts", discarded)


def _check_existing(runtime: Runtime, key: str, size: int, sha256: str) -> None:
    """A previous attempt stored this key: accept it only if it is the same bytes."""
    existing = _existing_sha256(runtime, key)
    if existing != sha256:
        raise PermanentFailure(
            f"a different object already exists under {key} (sha256 {existing[:12]}…, "
            f"downloaded {sha256[:12]}…, {size} bytes)",
            "conflict",
        )
    logger.info("object already stored by an earlier attempt, same sha256")


def _existing_sha256(runtime: Runtime, key: str) -> str:
    """The stored object's sha256: from its metadata record, else by reading it back."""
    try:
        record = json.loads(b"".join(runtime.storage.read(metadata_key(key))))
        if isinstance(record, dict) and isinstance(record.get("sha256"), str):
            return str(record["sha256"])
    except FileNotFoundError:
        pass
    digest = hashlib.sha256()
    for chunk in runtime.storage.read(key):
        digest.update(chunk)
    return digest.hexdigest()


def _metadata_record(
    held: Claim, download: Download, key: str, size: int, sha256: str, host: str
) -> dict[str, Any]:
    meta = dict(download.metadata)
    record: dict[str, Any] = {
        "provider": held.provider,
        "account": held.account,
        "recording_id": held.recording_key,
        "call_id": meta.pop("call_id", None) or held.call_id,
        "segment": meta.pop("segment", None),
        "started_at": meta.pop("started_at", None),
        "ended_at": meta.pop("ended_at", None),
        "duration_seconds": meta.pop("duration_seconds", None),
        "channels": meta.pop("channels", None),
        "format": download.format,
        "content_type": download.content_type,
        "size_bytes": size,
        "sha256": sha256,
        "captured_at": utcnow().isoformat(),
        "source_host": host,
        "storage_key": key,
        "ledger_id": held.id,
        "accepted_at": held.created_at.isoformat(),
    }
    record["provider_fields"] = meta
    return record


def _write_metadata(runtime: Runtime, key: str, record: dict[str, Any]) -> None:
    body = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
    try:
        runtime.storage.write(metadata_key(key), iter([body]), content_type="application/json")
    except ObjectExists:
        logger.debug("metadata record already present; keeping the first one")


def _resolve(runtime: Runtime, provider: Provider, held: Claim) -> CaptureOutcome:
    """A lookup row: find the recordings it stands for and accept each as its own row."""
    lookup = held.hints.get("lookup") or {}
    try:
        refs = provider.resolve(lookup)
    except NothingToCapture as exc:  # final: the provider says the call has no recording
        return _resolved(runtime, held, f"resolved into 0 recordings: {exc.reason}")
    if not refs:  # not listed yet (e.g. Telnyx lists a recording a while after its webhook)
        raise RetryLater("the provider lists no recording for this call yet")
    result = accept_refs(
        runtime.sessions, held.provider, held.account, refs, source=Source.LOOKUP, parent_id=held.id
    )
    runtime.publish(result.new_ids)
    detail = f"resolved into {len(result.recording_ids)} recording(s): " + ",".join(
        str(i) for i in result.recording_ids
    )
    return _resolved(runtime, held, detail)


def _resolved(runtime: Runtime, held: Claim, detail: str) -> CaptureOutcome:
    finish(runtime.sessions, held, State.RESOLVED, detail=detail[:1000], last_error=None)
    logger.info("lookup %s", detail[:200])
    return CaptureOutcome(State.RESOLVED, detail)


def _count_stored(
    runtime: Runtime, held: Claim, download: Download, key: str, size: int, created: bool
) -> None:
    """Metrics of a stored recording, ``verified`` when storage confirmed the object.

    An object this attempt created is confirmed by the conditional create itself (disk: fsync
    and link of the file written; S3: a 200 to a request whose Content-MD5 S3 checked, and an
    ETag compared with it), so no second round trip (a HEAD cost ~2.5 ms of worker CPU per
    recording). An earlier attempt's object, accepted by its sha256, is checked with a stat.
    """
    counters = metrics()
    since = _event_time(download) or held.created_at
    counters.capture_stored(held.provider, held.account, size, (utcnow() - since).total_seconds())
    if created:
        counters.captures_verified.labels(held.provider, held.account).inc()
        return
    try:
        stat = runtime.storage.stat(key)
    except Exception as exc:  # the row is stored; only the check is missing
        logger.warning("stored object could not be checked (%s)", type(exc).__name__)
        return
    if stat is not None and stat.size == size:
        counters.captures_verified.labels(held.provider, held.account).inc()
    else:
        logger.error("stored object is not at its key with %s bytes (found %s)", size, stat)


def _event_time(download: Download) -> datetime | None:
    """When the provider's event happened: the recording's end, if the provider says."""
    ended = download.metadata.get("ended_at")
    if isinstance(ended, str):
        try:
            ended = datetime.fromisoformat(ended.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(ended, datetime) and ended.tzinfo is not None:
        return ended
    return None


def _fail(runtime: Runtime, held: Claim, reason: str, code: str) -> CaptureOutcome:
    if finish(runtime.sessions, held, State.FAILED, detail=reason):  # once per recording
        logger.warning("recording failed permanently (%s): %s", code, reason)
        metrics().capture_failed(held.provider, held.account, code)
        report_final_failure(held.provider, held.account, code, reason, attempt=held.attempt)
    return CaptureOutcome(State.FAILED, reason)


def _retry(runtime: Runtime, held: Claim, reason: str, retry_after: float | None) -> CaptureOutcome:
    settings = runtime.settings
    if held.attempt >= settings.max_attempts:
        reason = f"gave up after {held.attempt} attempts: {reason}"
        return _fail(runtime, held, reason, "attempts_exhausted")
    delay = backoff_seconds(held.attempt, settings.retry_base_seconds, settings.retry_max_seconds)
    if retry_after is not None:
        delay = min(max(delay, retry_after), settings.retry_max_seconds)
    due = release_for_retry(runtime.sessions, held, reason, delay)
    if due is None:
        logger.warning("claim lost before the retry could be scheduled")
        return CaptureOutcome("skipped", "claim lost")
    runtime.publish([held.id], countdown=delay, due=due)
    logger.info("attempt %s failed, retrying in %.1fs: %s", held.attempt, delay, reason)
    return CaptureOutcome(State.RETRYING, reason, delay)


def _defer(runtime: Runtime, held: Claim, paused: datetime) -> CaptureOutcome:
    """The account is paused by a rate limit: reschedule without calling the provider.

    The attempt is not counted; the message waits at most ``RETRY_MAX_SECONDS`` (it must stay
    below the broker's visibility timeout) and the row is deferred again if still paused.
    """
    now = utcnow()
    due = min(paused, now + timedelta(seconds=runtime.settings.retry_max_seconds))
    reason = f"account paused by a rate limit until {paused.isoformat(timespec='seconds')}"
    return _reschedule(runtime, held, due, reason)


def _wait_out_outage(runtime: Runtime, held: Claim, reason: str) -> CaptureOutcome:
    """The storage is down (``StorageUnreachable``): retry without spending an attempt.

    An outage is ours, not the recording's: it must not burn ``MAX_ATTEMPTS`` (a minute of S3
    down used to fail every capture in flight). Bounded by a time budget instead: once the row
    is older than ``STORAGE_OUTAGE_MAX_SECONDS`` the attempts count again. The delay is a
    quarter of the row's age, jittered, between ``RETRY_BASE`` and ``RETRY_MAX``: it grows as
    the outage lasts, yet a row is retried soon after a short outage ends.
    """
    settings = runtime.settings
    age = (utcnow() - held.created_at).total_seconds()
    if age > settings.storage_outage_max_seconds:
        return _retry(runtime, held, reason, None)
    delay = min(settings.retry_max_seconds, max(settings.retry_base_seconds, age / 4))
    delay *= 0.5 + random.random() / 2
    return _reschedule(runtime, held, utcnow() + timedelta(seconds=delay), reason)


def _reschedule(runtime: Runtime, held: Claim, due: datetime, reason: str) -> CaptureOutcome:
    """Give the row back due at ``due`` without counting the attempt, and publish it then."""
    if not defer(runtime.sessions, held, due, reason):
        return CaptureOutcome("skipped", "claim lost")
    delay = max(0.0, (due - utcnow()).total_seconds())
    runtime.publish([held.id], countdown=delay, due=due)
    logger.info("%s; attempt rescheduled in %.1fs", reason[:300], delay)
    return CaptureOutcome(State.RETRYING, reason, delay)


def _release(runtime: Runtime, held: Claim) -> CaptureOutcome:
    """The worker is stopping: give the row back, due now, without counting the attempt."""
    reason = "released: the worker shut down mid-capture"
    if not defer(runtime.sessions, held, utcnow(), reason):
        return CaptureOutcome("skipped", "claim lost")
    runtime.publish([held.id])
    logger.warning("worker shutting down: capture released for another worker")
    return CaptureOutcome(State.RETRYING, reason, 0.0)


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: base·2^(attempt-1), scaled by 0.5 to 1.0, capped."""
    return min(cap, base * 2 ** max(0, attempt - 1) * (0.5 + random.random() / 2))
