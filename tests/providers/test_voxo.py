"""VOXO against its emulator over real HTTP: token caching and renewal, ≤ 2-day list windows,
Central time across DST, the ``recorded`` filter, ``start`` passed through exactly, error
reasons, and the webhook route that refuses every POST."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.voxo import VoxoEmulator
from ingest.app import create_app
from ledger import migrate
from providers.base import Account
from providers.errors import (
    CredentialsRefused,
    PermanentFailure,
    RetryLater,
    WebhooksNotOffered,
)
from providers.http import new_http_client
from providers.voxo import VoxoProvider
from providers.voxo_time import listed_start_utc, query_windows
from tests.fixtures.callrec import base_env, settings_from
from tests.providers.contract import webhook_request

SOURCES = {
    "email": "CALLREC_VOXO_EMAIL",
    "password": "CALLREC_VOXO_PASSWORD",
    "tenant_id": "CALLREC_VOXO_TENANT_ID",
}
FALL_BACK = datetime(2024, 11, 3, 6, 0, tzinfo=UTC)  # 01:00 CDT; 07:00Z is 01:00 CST
SPRING_FORWARD = datetime(2024, 3, 10, 8, 0, tzinfo=UTC)  # 02:00 CST becomes 03:00 CDT


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def emulator() -> Iterator[VoxoEmulator]:
    with VoxoEmulator() as running:
        yield running


def make(emulator: VoxoEmulator, clock: Clock | None = None, **credentials: str) -> VoxoProvider:
    account = Account(
        provider="voxo",
        name="default",
        api_base=emulator.base_url,
        audio_hosts=(emulator.audio_host,),
        credentials={
            "email": emulator.email,
            "password": emulator.password,
            "tenant_id": str(emulator.tenant_id),
            **credentials,
        },
        sources=SOURCES,
    )
    return VoxoProvider(account, new_http_client(5), clock=clock or time.time)


def logins(emulator: VoxoEmulator) -> int:
    return sum(1 for r in emulator.requests if r.path == "/authentication" and r.status == 201)


def listed(provider: VoxoProvider, since: datetime, until: datetime) -> list[Any]:
    return list(provider.list_recordings(since, until))


def wall_hours(window: tuple[str, str]) -> float:
    start, end = (datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in window)
    return (end - start).total_seconds() / 3600


# -- auth ---------------------------------------------------------------------------------------


def test_token_is_cached_across_calls(emulator: VoxoEmulator) -> None:
    voxo = make(emulator)
    since = datetime(2024, 6, 1, tzinfo=UTC)
    for _ in range(3):
        listed(voxo, since, since + timedelta(hours=1))
    assert logins(emulator) == 1


def test_token_is_renewed_when_it_expires(emulator: VoxoEmulator) -> None:
    clock = Clock()
    voxo = make(emulator, clock)
    since = datetime(2024, 6, 1, tzinfo=UTC)
    listed(voxo, since, since + timedelta(hours=1))
    clock.offset = emulator.token_ttl_seconds - 29  # within the 30 s renewal margin
    listed(voxo, since, since + timedelta(hours=1))
    assert logins(emulator) == 2
    assert not [r for r in emulator.requests if r.status == 401]  # renewed before a refusal


def test_a_401_renews_the_token_and_retries_once(emulator: VoxoEmulator) -> None:
    rec = emulator.add_recording(datetime(2024, 6, 1, 12, tzinfo=UTC))
    voxo = make(emulator)
    (ref,) = listed(voxo, rec.started_at, rec.started_at)
    emulator.revoke_tokens()
    time.sleep(0.01)
    assert voxo.fetch_recording(rec.unique_id, ref.hints).url.startswith(emulator.url)
    assert logins(emulator) == 2
    assert [r.status for r in emulator.requests if r.path.startswith("/call-recordings/")] == [
        401,
        200,
    ]


def test_a_second_401_is_not_retried_again(emulator: VoxoEmulator) -> None:
    emulator.token_ttl_seconds = 0  # every token is already expired at the API
    voxo = make(emulator)
    since = datetime(2024, 6, 1, tzinfo=UTC)
    with pytest.raises(CredentialsRefused, match="jwt expired") as caught:
        listed(voxo, since, since)
    assert caught.value.status == 401
    assert logins(emulator) == 2


def test_wrong_password_names_the_settings_never_the_secret(
    emulator: VoxoEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "hunter2-voxo-secret"
    voxo = make(emulator, password=secret)
    with pytest.raises(PermanentFailure) as caught:
        listed(voxo, datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 1, 1, tzinfo=UTC))
    reason = caught.value.reason
    assert "CALLREC_VOXO_EMAIL" in reason and "CALLREC_VOXO_PASSWORD" in reason
    assert "Invalid login" in reason and secret not in reason and secret not in caplog.text


def test_token_and_password_never_reach_the_logs(
    emulator: VoxoEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rec = emulator.add_recording(datetime(2024, 6, 1, 12, tzinfo=UTC))
    voxo = make(emulator)
    (ref,) = listed(voxo, rec.started_at, rec.started_at)
    emulator.revoke_tokens()
    time.sleep(0.01)
    download = voxo.fetch_recording(rec.unique_id, ref.hints)
    assert "renewing" in caplog.text
    token = voxo._token
    assert token and token not in caplog.text
    assert emulator.password not in caplog.text and "X-Amz-Signature" not in caplog.text
    assert download.url not in repr(download)


def test_missing_credentials_name_the_env_var(emulator: VoxoEmulator) -> None:
    voxo = make(emulator, tenant_id="")
    with pytest.raises(Exception, match="CALLREC_VOXO_TENANT_ID is not set"):
        listed(voxo, datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 1, 1, tzinfo=UTC))


# -- list windows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "requests"),
    [
        (timedelta(hours=1), 1),
        (timedelta(days=2), 1),  # exactly 2 days: one request
        (timedelta(days=2, seconds=1), 2),
        (timedelta(days=5), 3),
    ],
)
def test_ranges_are_split_into_requests_of_at_most_two_days(
    emulator: VoxoEmulator, span: timedelta, requests: int
) -> None:
    since = datetime(2024, 6, 1, 5, tzinfo=UTC)
    inside = [emulator.add_recording(since + span * f) for f in (0, 0.25, 0.5, 0.75, 1)]
    emulator.add_recording(since - timedelta(seconds=1))
    emulator.add_recording(since + span + timedelta(seconds=1))
    refs = listed(make(emulator), since, since + span)
    assert sorted(r.recording_id for r in refs) == sorted(r.unique_id for r in inside)
    windows = emulator.report_windows
    assert len(windows) == requests
    assert all(wall_hours(w) <= 48 for w in windows)
    assert windows[0][0] == "2024-06-01 00:00:00"  # 05:00Z is midnight CDT
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))  # contiguous


def test_spring_forward_two_days_take_two_requests_within_the_limit(
    emulator: VoxoEmulator,
) -> None:
    since = SPRING_FORWARD - timedelta(days=1)
    recs = [emulator.add_recording(since + timedelta(hours=h)) for h in range(0, 49, 4)]
    refs = listed(make(emulator), since, since + timedelta(days=2))
    assert sorted(r.recording_id for r in refs) == sorted(r.unique_id for r in recs)
    assert len(emulator.report_windows) == 2
    assert all(wall_hours(w) <= 48 for w in emulator.report_windows)


def test_fall_back_hour_lists_both_calls_sharing_one_wall_time(emulator: VoxoEmulator) -> None:
    first = emulator.add_recording(FALL_BACK + timedelta(minutes=30))  # 01:30 CDT
    second = emulator.add_recording(FALL_BACK + timedelta(minutes=90))  # 01:30 CST
    assert first.start == second.start
    voxo = make(emulator)
    # A window starting in the repeated hour still covers both occurrences of its wall times.
    refs = listed(voxo, FALL_BACK + timedelta(minutes=50), FALL_BACK + timedelta(minutes=100))
    assert [r.recording_id for r in refs] == [second.unique_id]
    assert emulator.report_windows[-1] == ("2024-11-03 01:00:00", "2024-11-03 02:00:00")
    refs = listed(voxo, FALL_BACK, FALL_BACK + timedelta(hours=2))
    assert sorted(r.recording_id for r in refs) == sorted([first.unique_id, second.unique_id])
    started = {
        r.recording_id: voxo.fetch_recording(r.recording_id, r.hints).metadata["started_at"]
        for r in refs
    }
    assert started == {
        first.unique_id: "2024-11-03T06:30:00Z",
        second.unique_id: "2024-11-03T07:30:00Z",
    }


@pytest.mark.parametrize(
    ("start", "unique_id", "utc"),
    [
        ("2021-08-13 19:36:59", "atl-ast2-1628901419.8373", "2021-08-14T00:36:59"),  # seed, CDT
        ("2024-01-15 12:00:00", "", "2024-01-15T18:00:00"),  # CST
        ("2024-11-03 01:30:00", "", "2024-11-03T06:30:00"),  # ambiguous: first (CDT)
        ("2024-11-03 01:30:00", "atl-ast2-1730619000.1", "2024-11-03T07:30:00"),  # by uniqueId
        ("2024-11-03 01:30:00", "atl-ast2-1600000000.1", "2024-11-03T06:30:00"),  # too far
        ("2024-03-10 02:30:00", "", "2024-03-10T08:30:00"),  # skipped: offset before the change
        ("2024-03-10 03:00:00", "", "2024-03-10T08:00:00"),
    ],
)
def test_listed_times_convert_to_utc_across_dst(start: str, unique_id: str, utc: str) -> None:
    converted = listed_start_utc(start, unique_id)
    assert converted is not None
    assert converted.isoformat() == utc + "+00:00"


def test_unparseable_listed_times_are_none() -> None:
    assert listed_start_utc("10/10/22 23:07:20") is None


def test_windows_reject_naive_or_reversed_ranges(emulator: VoxoEmulator) -> None:
    aware = datetime(2024, 6, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        query_windows(aware.replace(tzinfo=None), aware)
    with pytest.raises(ValueError, match="before"):
        make(emulator).list_recordings(aware, aware - timedelta(seconds=1))
    assert emulator.requests == []


# -- rows and the audio -------------------------------------------------------------------------


def test_only_recorded_rows_become_refs_with_safe_hints(emulator: VoxoEmulator) -> None:
    at = datetime(2024, 6, 1, 12, tzinfo=UTC)
    kept = emulator.add_recording(at, duration=18, direction="IN")
    emulator.add_recording(at + timedelta(minutes=1), recorded=0)
    (ref,) = listed(make(emulator), at, at + timedelta(hours=1))
    assert ref.recording_id == kept.unique_id and ref.call_id == kept.call_report_id
    assert ref.hints == {
        "start": kept.start,
        "call_report_id": kept.call_report_id,
        "duration_seconds": 18.0,
        "direction": "IN",
        "disposition": "ANSWERED",
    }
    assert "8005550123" not in str(ref)  # no phone numbers


def test_fetch_passes_the_listed_start_exactly_and_builds_the_record(
    emulator: VoxoEmulator,
) -> None:
    rec = emulator.add_recording(datetime(2021, 8, 14, 0, 36, 59, tzinfo=UTC), duration=18)
    voxo = make(emulator)
    (ref,) = listed(voxo, rec.started_at, rec.started_at)
    assert ref.hints["start"] == "2021-08-13 19:36:59"
    download = voxo.fetch_recording(rec.unique_id, ref.hints)
    assert (download.format, download.content_type) == ("mp3", "audio/mpeg")
    assert download.url.startswith(f"{emulator.url}/media/")
    assert dict(download.metadata) == {
        "call_id": rec.call_report_id,
        "call_report_id": rec.call_report_id,
        "started_at": "2021-08-14T00:36:59Z",
        "ended_at": "2021-08-14T00:37:17Z",
        "duration_seconds": 18.0,
        "listed_start_central": "2021-08-13 19:36:59",
        "direction": "OUT",
        "disposition": "ANSWERED",
    }
    changed = {**ref.hints, "start": "2021-08-13 19:36:59.0"}
    with pytest.raises(PermanentFailure, match=r"not found at the provider.*NotFound"):
        voxo.fetch_recording(rec.unique_id, changed)


def test_each_fetch_gets_a_new_url(emulator: VoxoEmulator) -> None:
    rec = emulator.add_recording(datetime(2024, 6, 1, 12, tzinfo=UTC))
    voxo = make(emulator)
    (ref,) = listed(voxo, rec.started_at, rec.started_at)
    urls = {voxo.fetch_recording(rec.unique_id, ref.hints).url for _ in range(2)}
    assert len(urls) == 2


@pytest.mark.parametrize("hints", [{}, {"start": ""}, {"start": 5}])
def test_a_row_without_its_listed_start_fails(emulator: VoxoEmulator, hints: Any) -> None:
    with pytest.raises(PermanentFailure, match="needs the start"):
        make(emulator).fetch_recording("atl-ast2-1.1", hints)
    assert emulator.requests == []


def test_resolve_is_refused_clearly(emulator: VoxoEmulator) -> None:
    with pytest.raises(PermanentFailure, match="no lookup rows"):
        make(emulator).resolve({"call_id": "x"})


def test_rate_limit_is_retry_later_with_retry_after(emulator: VoxoEmulator) -> None:
    voxo = make(emulator)
    since = datetime(2024, 6, 1, tzinfo=UTC)
    listed(voxo, since, since)  # logged in
    emulator.inject("api", "429", retry_after=7)
    with pytest.raises(RetryLater, match="HTTP 429 TooManyRequests") as caught:
        listed(voxo, since, since)
    assert caught.value.retry_after == 7
    emulator.inject("api", "503")
    with pytest.raises(RetryLater, match="HTTP 503 Unavailable: Temporary failure"):
        listed(voxo, since, since)


def test_a_list_over_the_limit_fails_with_voxos_reason(emulator: VoxoEmulator) -> None:
    voxo = make(emulator)
    with pytest.raises(PermanentFailure, match="HTTP 400 BadRequest: Date range cannot exceed"):
        voxo._call(
            "/call-reports",
            {
                "recordType": "recordings",
                "start": "2024-06-01 00:00:00",
                "end": "2024-06-04 00:00:00",
                "tenantId": "37",
            },
        )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"name": "BadRequest", "message": "bad", "code": 400}, "HTTP 400 BadRequest: bad"),
        (401, {"name": "NotAuthenticated", "message": "no"}, "HTTP 401 NotAuthenticated: no"),
        (500, {"error": "Internal"}, "HTTP 500 Internal"),
        (502, "<html>bad gateway</html>", "HTTP 502"),
        (404, ["not", "an", "object"], "HTTP 404"),
    ],
)  # fmt: skip
def test_error_bodies_become_short_reasons(status: int, body: Any, expected: str) -> None:
    response = (
        httpx.Response(status, json=body)
        if not isinstance(body, str)
        else httpx.Response(status, text=body)
    )
    assert VoxoProvider.describe_error(None, response) == expected  # type: ignore[arg-type]


# -- webhooks -----------------------------------------------------------------------------------


def test_verify_and_parse_refuse_with_404(emulator: VoxoEmulator) -> None:
    request = webhook_request(b"{}", {}, "/webhooks/voxo")
    for hook in (make(emulator).verify, make(emulator).parse):
        with pytest.raises(WebhooksNotOffered, match="VOXO sends no webhooks") as caught:
            hook(request)
        assert caught.value.status == 404


@pytest.mark.parametrize("path", ["/webhooks/voxo", "/webhooks/voxo/default"])
def test_the_webhook_route_answers_a_clear_404(tmp_path: Path, path: str) -> None:
    settings = settings_from(base_env(tmp_path))
    migrate(settings.database_url)
    client = create_app(settings).test_client()
    for content_type in ("application/json", "text/plain"):
        response = client.post(path, data=b'{"any": "thing"}', content_type=content_type)
        assert response.status_code == 404
        assert "VOXO sends no webhooks" in response.get_json()["error"]
