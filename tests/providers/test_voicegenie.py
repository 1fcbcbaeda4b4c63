"""VoiceGenie against its emulator over real HTTP: auth, filters, every page, envelope errors,
statuses, fresh URLs by re-listing, and the size check through one capture attempt."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from config.metrics import metrics
from emulators.server import LoopbackServer
from emulators.voicegenie import VoiceGenieEmulator, minutes_ago
from ledger import State, accept_refs, migrate
from providers.base import Account
from providers.errors import (
    ConfigurationMissing,
    NotReadyYet,
    PermanentFailure,
    RetryLater,
    WebhooksNotOffered,
)
from providers.http import new_http_client
from providers.registry import Accounts
from providers.voicegenie import PAGE_ATTEMPTS, VoiceGenieProvider
from storage import metadata_key, recording_key
from tests.fixtures.callrec import base_env, settings_from
from tests.providers.contract import webhook_request
from workers.capture import capture
from workers.runtime import Runtime, build_runtime

PAGE = 3
SINCE = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def emulator() -> Iterator[VoiceGenieEmulator]:
    with VoiceGenieEmulator() as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with new_http_client(5) as client:
        yield client


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def make(http: httpx.Client, waits: list[float]) -> Callable[..., VoiceGenieProvider]:
    """A provider on ``base_url`` with ``api_key``, pages of ``PAGE`` and recorded waits."""

    def build(base_url: str, api_key: str) -> VoiceGenieProvider:
        account = Account(
            provider="voicegenie",
            name="default",
            api_base=base_url,
            audio_hosts=(base_url.removeprefix("http://"),),
            credentials={"api_key": api_key},
            sources={"api_key": "CALLREC_VOICEGENIE_API_KEY"},
        )
        return VoiceGenieProvider(account, http, page_limit=PAGE, sleep=waits.append)

    return build


@pytest.fixture
def provider(
    make: Callable[..., VoiceGenieProvider], emulator: VoiceGenieEmulator
) -> VoiceGenieProvider:
    return make(emulator.base_url, emulator.api_key)


def now() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=1)


# -- auth ---------------------------------------------------------------------------------------
def test_wrong_api_key_is_a_permanent_failure_with_the_reason(
    make: Callable[..., VoiceGenieProvider], emulator: VoiceGenieEmulator
) -> None:
    with pytest.raises(PermanentFailure) as caught:
        list(make(emulator.base_url, "wrong").list_recordings(SINCE, now()))
    assert (
        caught.value.reason == "API refused the credentials (HTTP 401 Invalid or missing API key)"
    )


def test_missing_api_key_names_the_setting(
    make: Callable[..., VoiceGenieProvider], emulator: VoiceGenieEmulator
) -> None:
    with pytest.raises(ConfigurationMissing, match="CALLREC_VOICEGENIE_API_KEY is not set"):
        list(make(emulator.base_url, "").list_recordings(SINCE, now()))


# -- filters and pages --------------------------------------------------------------------------
def test_window_is_sent_as_utc_seconds_and_bounds_the_list(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator
) -> None:
    inside = emulator.add_recording(created_at=datetime(2024, 1, 16, 10, 30, tzinfo=UTC))
    emulator.add_recording(created_at=datetime(2024, 1, 17, 10, 30, tzinfo=UTC))
    since = datetime(2024, 1, 16, 12, 0, 0, 500_000, tzinfo=timezone(timedelta(hours=2)))
    until = datetime(2024, 1, 16, 10, 30, 0, 1)  # naive: taken as UTC
    refs = list(provider.list_recordings(since, until))
    assert [r.recording_id for r in refs] == [inside.call_uuid]
    (query,) = emulator.api_queries
    assert query == {
        "start_date": "2024-01-16T10:00:00Z",
        "end_date": "2024-01-16T10:30:01Z",
        "page": "1",
        "limit": str(PAGE),
    }


def test_window_backwards_is_refused(provider: VoiceGenieProvider) -> None:
    with pytest.raises(ValueError, match="until is before since"):
        list(provider.list_recordings(now(), SINCE))


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (1, 1), (3, 1), (6, 2), (7, 3)])
def test_every_page_is_read_once_and_no_page_past_the_end(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator, count: int, pages: int
) -> None:
    made = {emulator.add_recording(created_at=minutes_ago(i)).call_uuid for i in range(count)}
    refs = list(provider.list_recordings(SINCE, now()))
    assert sorted(r.recording_id or "" for r in refs) == sorted(made)
    assert [q["page"] for q in emulator.api_queries] == [str(p) for p in range(1, pages + 1)]


def test_refs_carry_safe_hints_never_the_url_or_phone(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator
) -> None:
    rec = emulator.add_recording(campaign_id="camp-1", duration=345)
    (ref,) = provider.list_recordings(SINCE, now())
    assert (ref.recording_id, ref.call_id) == (rec.call_uuid, rec.call_uuid)
    assert ref.hints["campaign_id"] == "camp-1" and ref.hints["duration"] == 345
    assert ref.hints["created_at"] == rec.item(None)["created_at"]
    assert "http" not in str(ref.hints) and rec.phone_number not in str(ref.hints)


def test_a_page_failing_then_succeeding_is_retried_in_the_walk(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator, waits: list[float]
) -> None:
    made = {emulator.add_recording(created_at=minutes_ago(i)).call_uuid for i in range(7)}
    walk = provider.list_recordings(SINCE, now())
    first_page = list(itertools.islice(walk, PAGE))  # page 2 is asked for on the next item
    emulator.inject("api", "500")
    rest = list(walk)
    assert {r.recording_id for r in first_page + rest} == made and len(first_page + rest) == 7
    assert [r.status for r in emulator.requests] == [200, 500, 200, 200]
    assert waits == [0.5]


def test_a_page_failing_every_time_ends_the_walk_with_the_reason(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator, waits: list[float]
) -> None:
    emulator.add_recording()
    emulator.inject("api", "503", times=PAGE_ATTEMPTS)
    with pytest.raises(RetryLater, match="HTTP 503 Temporary failure, try again"):
        list(provider.list_recordings(SINCE, now()))
    assert waits == [0.5, 1.0]


def test_rate_limit_waits_the_retry_after_or_hands_a_long_one_back(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator, waits: list[float]
) -> None:
    labels = {"provider": "voicegenie", "account": provider.account.name, "during": "poll"}

    def waited() -> float:
        return metrics().registry.get_sample_value("callrec_rate_limited_total", labels) or 0.0

    before = waited()
    emulator.add_recording()
    emulator.inject("api", "429", retry_after=2)
    assert len(list(provider.list_recordings(SINCE, now()))) == 1
    assert waits == [2.0]
    assert waited() == before + 1  # the 429 waited out inside the walk is counted
    emulator.inject("api", "429", retry_after=120)
    with pytest.raises(RetryLater) as caught:
        list(provider.list_recordings(SINCE, now()))
    assert caught.value.retry_after == 120 and "Too many requests" in caught.value.reason
    assert waited() == before + 1  # handed back: counted by whoever waits it out


def test_success_false_is_an_error_with_its_message(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator
) -> None:
    emulator.refuse_with = "Campaign not found"
    with pytest.raises(RetryLater, match="success=false, message: Campaign not found"):
        list(provider.list_recordings(SINCE, now()))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "not an object"),
        (b'{"success": true, "data": {"pagination": {"total_pages": 1}}}', "data.recordings"),
        (b'{"success": true, "data": {"recordings": []}}', "total_pages"),
        (b'{"success": "yes", "data": {}}', "success=false, message: none"),
        (b"<html>", "not JSON"),
    ],
)
def test_malformed_answers_are_clear_retryable_errors(
    make: Callable[..., VoiceGenieProvider], body: bytes, reason: str
) -> None:
    @Request.application
    def app(request: Request) -> Response:
        return Response(body, content_type="application/json")

    with LoopbackServer(app) as server, pytest.raises(RetryLater, match=reason):
        list(make(server.url, "k").list_recordings(SINCE, now()))


# -- fetch_recording ----------------------------------------------------------------------------
def test_fetch_relists_with_narrow_filters_for_a_fresh_url(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator, http: httpx.Client
) -> None:
    rec = emulator.add_recording(size=5000, duration=345, campaign_id="camp-9")
    for i in range(5):  # other recordings, outside the narrow window
        emulator.add_recording(created_at=minutes_ago(60 + i), campaign_id="camp-9")
    (ref,) = [r for r in provider.list_recordings(SINCE, now()) if r.recording_id == rec.call_uuid]
    emulator.clear_requests()
    download = provider.fetch_recording(rec.call_uuid, ref.hints)
    query = emulator.api_queries[-1]
    assert query["campaign_id"] == "camp-9"
    start = datetime.fromisoformat(query["start_date"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(query["end_date"].replace("Z", "+00:00"))
    assert end - start == timedelta(minutes=10, seconds=345)
    assert len(emulator.requests) == 1  # one request: the narrow window holds one page
    assert (download.format, download.content_type, download.expected_size) == (
        "mp3",
        "audio/mpeg",
        5000,
    )
    assert http.get(download.url).content == rec.audio().read()
    assert download.metadata["call_id"] == rec.call_uuid
    assert download.metadata["duration_seconds"] == 345
    assert "http" not in str(download.metadata)


def test_fetch_falls_back_to_the_listing_window(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator
) -> None:
    rec = emulator.add_recording()
    (ref,) = provider.list_recordings(SINCE, now())
    wrong = {**ref.hints, "created_at": "2020-01-01T00:00:00Z"}
    assert provider.fetch_recording(rec.call_uuid, wrong).expected_size == rec.size
    assert len(emulator.api_queries) == 3  # the listing, the narrow miss, the listing window


def test_fetch_without_hints_searches_the_whole_list(
    provider: VoiceGenieProvider, emulator: VoiceGenieEmulator
) -> None:
    rec = emulator.add_recording(format="wav", size=2000)
    download = provider.fetch_recording(rec.call_uuid, {})
    assert (download.format, download.content_type) == ("wav", "audio/wav")
    assert "start_date" not in emulator.api_queries[-1]


def test_recording_no_longer_listed_fails_permanently(provider: VoiceGenieProvider) -> None:
    with pytest.raises(PermanentFailure, match="no longer listed by VoiceGenie"):
        provider.fetch_recording("call-gone", {})


@pytest.mark.parametrize(
    ("status", "error"),
    [
        ("processing", NotReadyYet),
        ("in-progress", NotReadyYet),
        ("something-new", NotReadyYet),
        ("failed", PermanentFailure),
        ("deleted", PermanentFailure),
    ],
)
def test_statuses_other_than_completed_are_not_captured(
    provider: VoiceGenieProvider,
    emulator: VoiceGenieEmulator,
    status: str,
    error: type[Exception],
) -> None:
    rec = emulator.add_recording(status=status)
    with pytest.raises(error, match=repr(status)):
        provider.fetch_recording(rec.call_uuid, {})


def test_resolve_is_refused_clearly(provider: VoiceGenieProvider) -> None:
    with pytest.raises(PermanentFailure, match="no lookup rows"):
        provider.resolve({"call_uuid": "x"})


def test_webhooks_are_refused_with_404(provider: VoiceGenieProvider) -> None:
    request = webhook_request(b"{}", {}, "/webhooks/voicegenie")
    with pytest.raises(WebhooksNotOffered, match="no recording webhooks") as caught:
        provider.verify(request)
    assert caught.value.status == 404
    with pytest.raises(WebhooksNotOffered):
        provider.parse(request)


def test_registry_builds_it_from_the_settings(http: httpx.Client) -> None:
    settings = settings_from({"CALLREC_VOICEGENIE_API_KEY": "k1"})
    provider = Accounts(settings, http).provider("voicegenie")
    assert isinstance(provider, VoiceGenieProvider)
    assert provider.account.api_base == "https://api.voicegenie.com"
    assert provider.account.audio_hosts == ("*.s3.amazonaws.com",)
    assert provider.account.secret("api_key") == "k1"


# -- through one capture attempt (workers.capture, real storage) --------------------------------
@pytest.fixture
def runtime(tmp_path: Path, emulator: VoiceGenieEmulator) -> Iterator[Runtime]:
    env = base_env(
        tmp_path,
        **emulator.settings_env(),
        CALLREC_MAX_ATTEMPTS="2",
        CALLREC_RETRY_BASE_SECONDS="0",
        CALLREC_RETRY_MAX_SECONDS="0",
    )
    settings = settings_from(env)
    migrate(settings.database_url)
    running = build_runtime(settings, lambda rid, countdown, lane: None)
    yield running
    running.close()


def accept_listed(runtime: Runtime, emulator: VoiceGenieEmulator) -> dict[str, int]:
    provider = runtime.accounts.provider("voicegenie")
    refs = list(provider.list_recordings(SINCE, now()))
    result = accept_refs(runtime.sessions, "voicegenie", "default", refs, source="poll")
    return {
        ref.recording_id or "": rid for ref, rid in zip(refs, result.recording_ids, strict=True)
    }


def test_capture_stores_the_exact_bytes_with_the_record(
    runtime: Runtime, emulator: VoiceGenieEmulator
) -> None:
    rec = emulator.add_recording(size=70_000, duration=12)
    rows = accept_listed(runtime, emulator)
    assert capture(runtime, rows[rec.call_uuid]).state == State.STORED
    key = recording_key("voicegenie", "default", rec.call_uuid, "mp3")
    record: dict[str, Any] = json.loads(b"".join(runtime.storage.read(metadata_key(key))))
    assert (record["sha256"], record["size_bytes"]) == (rec.audio().sha256(), 70_000)
    assert (record["provider"], record["recording_id"], record["call_id"]) == (
        "voicegenie",
        rec.call_uuid,
        rec.call_uuid,
    )
    assert record["provider_fields"]["file_size"] == 70_000
    assert "X-Amz" not in str(record)


def test_lying_file_size_is_never_stored_and_fails_after_the_attempts(
    runtime: Runtime, emulator: VoiceGenieEmulator
) -> None:
    rec = emulator.add_recording(size=70_000, reported_size=69_999)
    row = accept_listed(runtime, emulator)[rec.call_uuid]
    first = capture(runtime, row)
    assert first.state == State.RETRYING
    assert first.detail == "audio has 70000 bytes, the provider said 69999"
    second = capture(runtime, row)
    assert second.state == State.FAILED
    assert (
        second.detail == "gave up after 2 attempts: audio has 70000 bytes, the provider said 69999"
    )
    key = recording_key("voicegenie", "default", rec.call_uuid, "mp3")
    assert runtime.storage.stat(key) is None and runtime.storage.stat(metadata_key(key)) is None
    media = [r for r in emulator.requests if r.path.startswith("/media/")]
    assert len(media) == 2  # one audio request per attempt, refused before the body was read
