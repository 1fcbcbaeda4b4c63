"""The VOXO emulator over real HTTP on loopback: auth with expiring tokens, the call-reports rules
(required parameters, 2-day limit, Central wall time across DST), the exact-start rule, expiring
audio URLs (also mid-download) and the faults."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from emulators.voxo import VoxoEmulator


@pytest.fixture
def emulator() -> Iterator[VoxoEmulator]:
    with VoxoEmulator(url_ttl_seconds=5) as running:
        yield running


def login(emulator: VoxoEmulator, **overrides: str) -> httpx.Response:
    body = {"strategy": "local", "email": emulator.email, "password": emulator.password}
    return httpx.post(f"{emulator.base_url}/authentication", json={**body, **overrides})


@pytest.fixture
def api(emulator: VoxoEmulator) -> Iterator[httpx.Client]:
    token = login(emulator).json()["accessToken"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers, trust_env=False) as client:
        yield client


def reports(api: httpx.Client, start: str, end: str, **extra: str) -> httpx.Response:
    params = {"recordType": "recordings", "start": start, "end": end, "tenantId": "37", **extra}
    return api.get("/call-reports", params=params)


def test_login_returns_a_feathers_body_with_an_expiring_jwt(emulator: VoxoEmulator) -> None:
    response = login(emulator)
    assert response.status_code == 201
    body = response.json()
    assert body["accessToken"].count(".") == 2
    payload = body["authentication"]["payload"]
    assert payload["exp"] - payload["iat"] == pytest.approx(emulator.token_ttl_seconds)


@pytest.mark.parametrize(
    ("overrides", "status", "name"),
    [
        ({"password": "wrong"}, 401, "NotAuthenticated"),
        ({"email": "someone@else.test"}, 401, "NotAuthenticated"),
        ({"strategy": "jwt"}, 400, "BadRequest"),
    ],
)
def test_bad_logins_are_refused(
    emulator: VoxoEmulator, overrides: dict[str, str], status: int, name: str
) -> None:
    response = login(emulator, **overrides)
    assert (response.status_code, response.json()["name"]) == (status, name)
    assert "accessToken" not in response.text


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc", "Bearer a.b.c"])
def test_calls_without_a_valid_token_are_401(
    emulator: VoxoEmulator, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{emulator.base_url}/call-reports", headers=headers)
    assert (response.status_code, response.json()["className"]) == (401, "not-authenticated")


def test_tokens_expire_after_their_ttl_and_when_revoked(emulator: VoxoEmulator) -> None:
    short = emulator.issue_token(ttl=0.3)
    url = f"{emulator.base_url}/call-reports"
    params = {
        "recordType": "recordings",
        "start": "2024-01-01 00:00:00",
        "end": "2024-01-01 01:00:00",
    }
    params["tenantId"] = "37"
    assert httpx.get(url, params=params, headers={"Authorization": f"Bearer {short}"}).is_success
    time.sleep(0.4)
    expired = httpx.get(url, params=params, headers={"Authorization": f"Bearer {short}"})
    assert (expired.status_code, expired.json()["message"]) == (401, "jwt expired")
    long = emulator.issue_token()
    time.sleep(0.01)
    emulator.revoke_tokens()
    assert (
        httpx.get(url, params=params, headers={"Authorization": f"Bearer {long}"}).status_code
        == 401
    )


def test_reports_list_central_wall_time_across_both_dst_changes(
    emulator: VoxoEmulator, api: httpx.Client
) -> None:
    # 2024-11-03: 01:30 CDT (06:30Z) and 01:30 CST (07:30Z) share one wall time.
    first = emulator.add_recording(datetime(2024, 11, 3, 6, 30, tzinfo=UTC))
    second = emulator.add_recording(datetime(2024, 11, 3, 7, 30, tzinfo=UTC))
    spring = emulator.add_recording(datetime(2024, 3, 10, 8, 0, tzinfo=UTC))  # 03:00 CDT
    summer = emulator.add_recording(datetime(2021, 8, 14, 0, 36, 59, tzinfo=UTC))
    assert first.start == second.start == "2024-11-03 01:30:00"
    assert spring.start == "2024-03-10 03:00:00"
    assert summer.start == "2021-08-13 19:36:59"  # the seed's example row
    rows = reports(api, "2024-11-03 00:00:00", "2024-11-03 02:00:00").json()
    assert [r["uniqueId"] for r in rows] == [second.unique_id, first.unique_id]  # newest first
    assert set(rows[0]) >= {"id", "start", "uniqueId", "recorded", "duration", "direction"}
    assert reports(api, "2024-03-10 02:00:00", "2024-03-10 03:00:00").json()[0]["start"] == (
        "2024-03-10 03:00:00"
    )


def test_exactly_two_days_is_served_and_more_is_a_400(
    emulator: VoxoEmulator, api: httpx.Client
) -> None:
    assert reports(api, "2024-06-01 00:00:00", "2024-06-03 00:00:00").status_code == 200
    response = reports(api, "2024-06-01 00:00:00", "2024-06-03 00:00:01")
    assert (response.status_code, response.json()["message"]) == (
        400,
        "Date range cannot exceed 2 days",
    )


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"start": ""}, 400),
        ({"recordType": "calls"}, 400),
        ({"start": "2024-06-01T00:00:00Z"}, 400),
        ({"end": "2024-05-01 00:00:00"}, 400),
        ({"tenantId": ""}, 400),
        ({"tenantId": "38"}, 403),
    ],
)
def test_report_parameters_are_enforced(
    api: httpx.Client, params: dict[str, str], status: int
) -> None:
    base = {"start": "2024-06-01 00:00:00", "end": "2024-06-01 12:00:00"}
    merged = {**base, **params}
    response = reports(api, merged.pop("start"), merged.pop("end"), **merged)
    assert response.status_code == status and response.json()["code"] == status


def test_audio_needs_the_listed_start_exactly(emulator: VoxoEmulator, api: httpx.Client) -> None:
    rec = emulator.add_recording(datetime(2024, 6, 1, 12, 0, 5, tzinfo=UTC), size=10_000)
    path = f"/call-recordings/{rec.unique_id}"
    for wrong in ("2024-06-01 07:00:06", "2024-06-01 7:00:05", "2024-06-01T07:00:05"):
        response = api.get(path, params={"tenantId": "37", "start": wrong})
        assert response.status_code == 404, wrong
    assert api.get(path, params={"tenantId": "37"}).status_code == 400
    uri = api.get(path, params={"tenantId": "37", "start": rec.start}).json()["uri"]
    audio = httpx.get(uri)
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
    assert hashlib.sha256(audio.content).hexdigest() == rec.audio().sha256()


def test_unrecorded_calls_are_listed_but_have_no_audio(
    emulator: VoxoEmulator, api: httpx.Client
) -> None:
    rec = emulator.add_recording(datetime(2024, 6, 1, 12, tzinfo=UTC), recorded=0)
    (row,) = reports(api, "2024-06-01 00:00:00", "2024-06-02 00:00:00").json()
    assert row["recorded"] == 0
    response = api.get(
        f"/call-recordings/{rec.unique_id}", params={"tenantId": "37", "start": rec.start}
    )
    assert response.status_code == 404


def test_audio_urls_expire_after_the_ttl(emulator: VoxoEmulator) -> None:
    rec = emulator.add_recording(size=5_000)
    uri = emulator.presign(rec.unique_id, ttl=1.0)
    assert httpx.get(uri).status_code == 200
    time.sleep(1.1)
    expired = httpx.get(uri)
    assert expired.status_code == 403 and b"Request has expired" in expired.content


def test_a_slow_body_is_cut_when_its_url_expires(emulator: VoxoEmulator) -> None:
    rec = emulator.add_recording(size=200_000)
    emulator.inject("audio", "slow", seconds=2.0)
    uri = emulator.presign(rec.unique_id, ttl=0.5)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", uri) as response:
        assert response.status_code == 200
        b"".join(response.iter_raw())
    assert 0.4 < time.monotonic() - started < 1.8


def test_a_slow_body_within_its_ttl_arrives_whole() -> None:
    with VoxoEmulator(cut_at_expiry=False) as emulator:
        rec = emulator.add_recording(size=100_000)
        emulator.inject("audio", "slow", seconds=2.0)
        uri = emulator.presign(rec.unique_id, ttl=1.0)  # S3 checks expiry only at the start
        started = time.monotonic()
        body = httpx.get(uri).content
        assert time.monotonic() - started >= 1.5  # the body went on past the URL's expiry
        assert hashlib.sha256(body).hexdigest() == rec.audio().sha256()


@pytest.mark.parametrize(("kind", "status"), [("429", 429), ("500", 500), ("503", 503)])
def test_api_faults_in_the_feathers_shape(
    emulator: VoxoEmulator, api: httpx.Client, kind: str, status: int
) -> None:
    opts = {"retry_after": 4} if kind == "429" else {}
    emulator.inject("api", kind, **opts)  # type: ignore[arg-type]
    response = reports(api, "2024-06-01 00:00:00", "2024-06-01 01:00:00")
    assert (response.status_code, response.json()["code"]) == (status, status)
    if status == 429:
        assert response.headers["Retry-After"] == "4"
    assert reports(api, "2024-06-01 00:00:00", "2024-06-01 01:00:00").status_code == 200
