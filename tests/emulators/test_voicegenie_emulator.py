"""The VoiceGenie emulator over real HTTP on loopback: the seed's envelope and item shape, auth,
filters, pagination, faults, expiring audio and a lying ``file_size``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from emulators.voicegenie import VoiceGenieEmulator, minutes_ago

# The keys of the seed's sample recording (000_…).
SEED_ITEM_KEYS = {
    "call_uuid",
    "recording_url",
    "duration",
    "file_size",
    "format",
    "transcription_available",
    "campaign_id",
    "phone_number",
    "status",
    "created_at",
}


@pytest.fixture
def emulator() -> Iterator[VoiceGenieEmulator]:
    with VoiceGenieEmulator(url_ttl_seconds=600) as running:
        yield running


@pytest.fixture
def api(emulator: VoiceGenieEmulator) -> Iterator[httpx.Client]:
    headers = {"x-api-key": emulator.api_key}
    with httpx.Client(base_url=emulator.base_url, headers=headers, trust_env=False) as client:
        yield client


def listing(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/callRecordings", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert (body["success"], body["message"]) == (True, "Call recordings retrieved successfully")
    return body["data"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("key", [None, "wrong", "Bearer test-voicegenie-key"])
def test_api_key_header_is_required(emulator: VoiceGenieEmulator, key: str | None) -> None:
    headers = {"x-api-key": key} if key else {}
    response = httpx.get(f"{emulator.base_url}/callRecordings", headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "message": "Invalid or missing API key",
        "data": None,
    }


def test_items_have_the_seed_shape(emulator: VoiceGenieEmulator, api: httpx.Client) -> None:
    rec = emulator.add_recording(size=2048, duration=345, created_at=datetime(2024, 1, 16, 10, 30))
    (item,) = listing(api)["recordings"]
    assert set(item) == SEED_ITEM_KEYS
    assert (item["call_uuid"], item["duration"], item["file_size"]) == (rec.call_uuid, 345, 2048)
    assert (item["format"], item["status"], item["created_at"]) == (
        "mp3",
        "completed",
        "2024-01-16T10:30:00Z",
    )
    assert "X-Amz-Signature=" in item["recording_url"]


@pytest.mark.parametrize(("count", "total_pages"), [(0, 0), (20, 1), (21, 2)])
def test_pagination_in_the_seed_shape(
    emulator: VoiceGenieEmulator, api: httpx.Client, count: int, total_pages: int
) -> None:
    for i in range(count):
        emulator.add_recording(created_at=minutes_ago(i))
    first = listing(api)
    assert first["pagination"] == {
        "page": 1,
        "limit": 20,
        "total": count,
        "total_pages": total_pages,
    }
    assert len(first["recordings"]) == min(count, 20)
    created = [item["created_at"] for item in first["recordings"]]
    assert created == sorted(created, reverse=True)  # newest first
    past_the_end = listing(api, page=total_pages + 1)
    assert past_the_end["recordings"] == []


def test_filters_campaign_and_inclusive_dates(
    emulator: VoiceGenieEmulator, api: httpx.Client
) -> None:
    at = datetime(2024, 1, 16, 10, 30, tzinfo=UTC)
    edge = emulator.add_recording(created_at=at, campaign_id="a")
    emulator.add_recording(created_at=at, campaign_id="b")
    emulator.add_recording(created_at=datetime(2024, 1, 16, 10, 31, tzinfo=UTC), campaign_id="a")
    found = listing(
        api, campaign_id="a", start_date="2024-01-16T10:30:00Z", end_date="2024-01-16T10:30:00Z"
    )
    assert [item["call_uuid"] for item in found["recordings"]] == [edge.call_uuid]


@pytest.mark.parametrize(
    "params",
    [{"page": "0"}, {"limit": "101"}, {"limit": "x"}, {"start_date": "yesterday"}],
)
def test_bad_parameters_are_400_in_the_envelope(api: httpx.Client, params: dict[str, str]) -> None:
    response = api.get("/callRecordings", params=params)
    assert response.status_code == 400
    assert response.json()["success"] is False and response.json()["message"]


def test_faults_fail_the_next_pages_then_answer(
    emulator: VoiceGenieEmulator, api: httpx.Client
) -> None:
    emulator.inject("api", "429", retry_after=3)
    emulator.inject("api", "500")
    limited = api.get("/callRecordings")
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert limited.json()["message"] == "Too many requests"
    assert api.get("/callRecordings").status_code == 500
    assert api.get("/callRecordings").status_code == 200


def test_refuse_with_answers_success_false(emulator: VoiceGenieEmulator, api: httpx.Client) -> None:
    emulator.refuse_with = "Campaign not found"
    response = api.get("/callRecordings")
    assert (response.status_code, response.json()) == (
        200,
        {"success": False, "message": "Campaign not found"},
    )


def test_audio_is_exact_ranged_and_expires(emulator: VoiceGenieEmulator) -> None:
    rec = emulator.add_recording(size=10_000, format="wav")
    with httpx.Client(trust_env=False) as http:
        url = emulator.presign(rec, ttl=0.5)
        whole = http.get(url)
        assert (whole.status_code, whole.headers["content-type"]) == (200, "audio/wav")
        assert whole.content == rec.audio().read() and whole.content[:4] == b"RIFF"
        part = http.get(url, headers={"Range": "bytes=10-19"})
        assert (part.status_code, part.content) == (206, rec.audio().read(10, 20))
        time.sleep(0.6)
        expired = http.get(url)
        assert expired.status_code == 403 and b"Request has expired" in expired.content


def test_recording_url_is_null_and_media_absent_until_completed(
    emulator: VoiceGenieEmulator, api: httpx.Client
) -> None:
    rec = emulator.add_recording(status="processing")
    (item,) = listing(api)["recordings"]
    assert (item["status"], item["recording_url"]) == ("processing", None)
    with httpx.Client(trust_env=False) as http:
        assert http.get(emulator.presign(rec)).status_code == 404
    emulator.update(rec.call_uuid, status="completed")
    (item,) = listing(api)["recordings"]
    assert item["recording_url"] is not None


def test_file_size_can_lie_while_the_audio_keeps_its_size(
    emulator: VoiceGenieEmulator, api: httpx.Client
) -> None:
    rec = emulator.add_recording(size=3000, reported_size=2048576)
    (item,) = listing(api)["recordings"]
    assert item["file_size"] == 2048576
    with httpx.Client(trust_env=False) as http:
        assert len(http.get(item["recording_url"]).content) == 3000
    emulator.update(rec.call_uuid, reported_size=None)
    assert listing(api)["recordings"][0]["file_size"] == 3000
