"""One capture attempt in-process (no Celery), against the emulator over real HTTP and real
storage: what a retry finds in storage, formats, list shapes, attempt limits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from emulators.telnyx import TelnyxEmulator
from ledger import State, accept_refs, claim, migrate
from ledger.models import Recording, utcnow
from providers.base import RecordingRef
from storage import Storage, StorageUnreachable, metadata_key, recording_key
from storage.disk import PARTIAL_DIR, _partial_stem
from tests.fixtures.callrec import base_env, settings_from
from workers.capture import capture
from workers.runtime import Runtime, build_runtime

Sent = list[tuple[int, float | None]]


@pytest.fixture
def sent() -> Sent:
    return []


def make_runtime(tmp_path: Path, emulator: TelnyxEmulator, sent: Sent, **overrides: str) -> Runtime:
    env = base_env(
        tmp_path,
        **{
            "CALLREC_TELNYX_API_KEY": emulator.api_key,
            "CALLREC_TELNYX_API_BASE": emulator.base_url,
            "CALLREC_TELNYX_AUDIO_HOSTS": emulator.audio_host,
            **overrides,
        },
    )
    settings = settings_from(env)
    migrate(settings.database_url)
    return build_runtime(settings, lambda rid, countdown, _lane: sent.append((rid, countdown)))


@pytest.fixture
def new_runtime(tmp_path: Path, sent: Sent) -> Iterator[Callable[..., Runtime]]:
    """Build runtimes against an emulator with setting overrides; all closed afterwards."""
    built: list[Runtime] = []

    def build(emulator: TelnyxEmulator, **overrides: str) -> Runtime:
        runtime = make_runtime(tmp_path / str(len(built)), emulator, sent, **overrides)
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


@pytest.fixture
def runtime(new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator) -> Runtime:
    return new_runtime(telnyx_emulator)


def accept(runtime: Runtime, recording_id: str | None = None, **lookup: str) -> int:
    ref = RecordingRef(recording_id=recording_id, lookup=tuple(lookup.items()))
    (row_id,) = accept_refs(runtime.sessions, "telnyx", "default", [ref], source="test").new_ids
    return row_id


def test_object_already_stored_with_same_bytes_counts_as_stored(
    runtime: Runtime, telnyx_emulator: TelnyxEmulator
) -> None:
    """A previous attempt wrote the audio and died before its record and the ledger update."""
    rec = telnyx_emulator.add_recording(size=70_000)
    key = recording_key("telnyx", "default", rec.id, "mp3")
    runtime.storage.write(key, rec.audio("mp3").iter_bytes(), content_type="audio/mpeg")
    outcome = capture(runtime, accept(runtime, rec.id))
    assert outcome.state == State.STORED
    assert json.loads(b"".join(runtime.storage.read(metadata_key(key))))["sha256"] == (
        rec.audio("mp3").sha256()
    )


def test_different_object_under_the_key_is_never_replaced(
    runtime: Runtime, telnyx_emulator: TelnyxEmulator
) -> None:
    rec = telnyx_emulator.add_recording(size=70_000)
    key = recording_key("telnyx", "default", rec.id, "mp3")
    runtime.storage.write(key, iter([b"something else"]), content_type="audio/mpeg")
    outcome = capture(runtime, accept(runtime, rec.id))
    assert outcome.state == State.FAILED
    assert outcome.detail is not None and "different object" in outcome.detail
    assert b"".join(runtime.storage.read(key)) == b"something else"


def test_second_run_of_a_stored_row_does_nothing(
    runtime: Runtime, telnyx_emulator: TelnyxEmulator
) -> None:
    rec = telnyx_emulator.add_recording(size=1000)
    row_id = accept(runtime, rec.id)
    assert capture(runtime, row_id).state == State.STORED
    requests_before = len(telnyx_emulator.requests)
    assert capture(runtime, row_id).state == "skipped"
    assert len(telnyx_emulator.requests) == requests_before


def test_wav_format_setting_stores_one_wav_object(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator
) -> None:
    runtime = new_runtime(telnyx_emulator, CALLREC_TELNYX_FORMAT="wav")
    rec = telnyx_emulator.add_recording(size=10_000)
    assert capture(runtime, accept(runtime, rec.id)).state == State.STORED
    wav = recording_key("telnyx", "default", rec.id, "wav")
    stat = runtime.storage.stat(wav)
    assert stat is not None and stat.size == rec.wav_size
    assert runtime.storage.stat(recording_key("telnyx", "default", rec.id, "mp3")) is None
    record = json.loads(b"".join(runtime.storage.read(metadata_key(wav))))
    assert (record["format"], record["content_type"]) == ("wav", "audio/wav")


@pytest.mark.parametrize("wrapped", [False, True], ids=["flat-items", "wrapped-items"])
def test_lookup_reads_both_list_shapes(
    new_runtime: Callable[..., Runtime], sent: Sent, wrapped: bool
) -> None:
    with TelnyxEmulator(list_wrapped=wrapped) as emulator:
        runtime = new_runtime(emulator)
        first = emulator.add_recording(call_session_id="s-1", size=100)
        second = emulator.add_recording(call_session_id="s-1", size=100)
        emulator.add_recording(call_session_id="s-2", size=100)
        outcome = capture(runtime, accept(runtime, call_session_id="s-1"))
        assert outcome.state == State.RESOLVED
        assert len(sent) == 2  # one wake-up per recording found
        for row_id, _countdown in sent:
            assert capture(runtime, row_id).state == State.STORED
        for rec in (first, second):
            assert runtime.storage.stat(recording_key("telnyx", "default", rec.id, "mp3"))


def test_attempts_are_bounded_then_failed_with_the_reason(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator, sent: Sent
) -> None:
    runtime = new_runtime(
        telnyx_emulator,
        CALLREC_MAX_ATTEMPTS="2",
        CALLREC_RETRY_BASE_SECONDS="0",
        CALLREC_RETRY_MAX_SECONDS="0",
    )
    rec = telnyx_emulator.add_recording(size=100)
    telnyx_emulator.inject("api", "500", times=5)
    row_id = accept(runtime, rec.id)
    first = capture(runtime, row_id)
    assert first.state == State.RETRYING and sent == [(row_id, 0.0)]
    second = capture(runtime, row_id)
    assert second.state == State.FAILED
    assert second.detail == "gave up after 2 attempts: API HTTP 500 500 Internal Server Error"


class _StorageDown:
    """The runtime's storage during an outage: every write fails as S3 unreachable does."""

    def __init__(self, inner: Storage) -> None:
        self.url = inner.url

    def write(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> int:
        for _chunk in chunks:
            break
        raise StorageUnreachable("S3 put failed: Could not connect to the endpoint URL")


def test_storage_outage_spends_no_attempt_within_its_time_budget(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator, sent: Sent
) -> None:
    runtime = new_runtime(
        telnyx_emulator,
        CALLREC_MAX_ATTEMPTS="1",
        CALLREC_RETRY_BASE_SECONDS="0",
        CALLREC_RETRY_MAX_SECONDS="0",
    )
    runtime.storage = _StorageDown(runtime.storage)  # type: ignore[assignment]
    row_id = accept(runtime, telnyx_emulator.add_recording(size=100).id)
    for _ in range(3):  # MAX_ATTEMPTS=1 would have failed the row at the first
        outcome = capture(runtime, row_id)
        assert outcome.state == State.RETRYING
        assert outcome.detail is not None and outcome.detail.startswith("storage unreachable")
    assert sent == [(row_id, 0.0)] * 3
    with runtime.sessions() as session:
        assert session.get(Recording, row_id).attempts == 0  # type: ignore[union-attr]


def test_storage_outage_past_its_time_budget_counts(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator
) -> None:
    runtime = new_runtime(
        telnyx_emulator, CALLREC_MAX_ATTEMPTS="1", CALLREC_STORAGE_OUTAGE_MAX_SECONDS="0"
    )
    runtime.storage = _StorageDown(runtime.storage)  # type: ignore[assignment]
    outcome = capture(runtime, accept(runtime, telnyx_emulator.add_recording(size=100).id))
    assert outcome.state == State.FAILED
    assert outcome.detail is not None and "gave up after 1 attempts: storage unreachable" in (
        outcome.detail
    )


def test_missing_api_key_retries_naming_the_setting(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator, tmp_path: Path
) -> None:
    runtime = new_runtime(telnyx_emulator)
    runtime.accounts = type(runtime.accounts)(
        settings_from({**base_env(tmp_path), "CALLREC_TELNYX_API_BASE": telnyx_emulator.base_url}),
        runtime.http,
    )
    outcome = capture(runtime, accept(runtime, "r-1"))
    assert outcome.state == State.RETRYING
    assert outcome.detail == "not configured: CALLREC_TELNYX_API_KEY is not set"


@pytest.mark.s3
def test_capture_to_s3_multipart_is_exact(
    new_runtime: Callable[..., Runtime],
    telnyx_emulator: TelnyxEmulator,
    s3_bucket: tuple[str, str],
) -> None:
    endpoint, bucket = s3_bucket
    runtime = new_runtime(
        telnyx_emulator,
        CALLREC_STORAGE_URL=f"s3://{bucket}/rec",
        CALLREC_S3_ENDPOINT_URL=endpoint,
        CALLREC_S3_PART_SIZE_BYTES=str(5 * 1024 * 1024),
    )
    rec = telnyx_emulator.add_recording(size=12 * 1024 * 1024 + 7)
    assert capture(runtime, accept(runtime, rec.id)).state == State.STORED
    key = recording_key("telnyx", "default", rec.id, "mp3")
    digest = hashlib.sha256()
    for chunk in runtime.storage.read(key):
        digest.update(chunk)
    assert digest.hexdigest() == rec.audio("mp3").sha256()


def test_a_later_attempt_discards_what_a_killed_attempt_left_half_written(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator
) -> None:
    """Attempt 1 was SIGKILLed mid-write (its temp file or multipart upload stays behind, its
    claim expires); attempt 2 holds the claim, so it removes those leftovers of the key."""
    runtime = new_runtime(
        telnyx_emulator, CALLREC_TASK_TIME_LIMIT_SECONDS="2", CALLREC_STUCK_AFTER_SECONDS="3"
    )
    rec = telnyx_emulator.add_recording(size=30_000)
    row_id = accept(runtime, rec.id)
    assert claim(runtime.sessions, row_id, timedelta(seconds=3)) is not None  # the dead one
    with runtime.sessions.begin() as session:
        session.execute(
            update(Recording)
            .where(Recording.id == row_id)
            .values(claimed_at=utcnow() - timedelta(seconds=10))
        )
    key = recording_key("telnyx", "default", rec.id, "mp3")
    partial = Path(runtime.settings.storage_url.removeprefix("file://")) / PARTIAL_DIR
    partial.mkdir(parents=True)
    leftover = partial / f"{_partial_stem(key)}dead.tmp"
    leftover.write_bytes(b"half a recording")

    outcome = capture(runtime, row_id)
    assert outcome.state == State.STORED
    assert not leftover.exists()


class _TakenOverMidWrite:
    """The runtime's storage, but a second attempt claims the row as the first write begins
    (the first attempt outlived its lease: a Redis redelivery after visibility_timeout)."""

    def __init__(self, runtime: Runtime, row_id: int) -> None:
        self._inner = runtime.storage
        self._runtime = runtime
        self._row_id = row_id
        self.taken_over = False

    def write(self, key: str, chunks: Iterator[bytes], *, content_type: str) -> int:
        if not self.taken_over:
            self.taken_over = claim(self._runtime.sessions, self._row_id, timedelta(0)) is not None
        return self._inner.write(key, chunks, content_type=content_type)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_an_attempt_that_lost_its_claim_while_storing_records_nothing(
    runtime: Runtime, telnyx_emulator: TelnyxEmulator
) -> None:
    """It wrote the same bytes the holder will, but the row is the holder's to finish."""
    rec = telnyx_emulator.add_recording(size=30_000)
    row_id = accept(runtime, rec.id)
    storage = _TakenOverMidWrite(runtime, row_id)
    runtime.storage = storage  # type: ignore[assignment]
    outcome = capture(runtime, row_id)
    assert storage.taken_over
    assert (outcome.state, outcome.detail) == ("skipped", "claim lost")
    with runtime.sessions() as session:
        row = session.get(Recording, row_id)
        assert row is not None and (row.state, row.attempts) == (State.FETCHING, 2)
