"""The Twilio emulator over real HTTP: auth, resources, paging, media, errors, faults, signer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from emulators.twilio import TwilioCallbackSigner, TwilioEmulator, callback_params


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator() as running:
        yield running


def get(emulator: TwilioEmulator, path: str, **kwargs: object) -> httpx.Response:
    auth = (emulator.account_sid, emulator.auth_token)
    return httpx.get(f"{emulator.base_url}{path}", auth=auth, timeout=5, **kwargs)  # type: ignore[arg-type]


def list_path(emulator: TwilioEmulator) -> str:
    return f"/2010-04-01/Accounts/{emulator.account_sid}/Recordings.json"


def test_every_route_needs_basic_auth(emulator: TwilioEmulator) -> None:
    rec = emulator.add_recording()
    for path in (f"{rec.path}.json", rec.path, list_path(emulator)):
        response = httpx.get(f"{emulator.base_url}{path}", timeout=5)
        assert response.status_code == 401
        assert response.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }
        assert get(emulator, path).status_code == 200
    assert [r.authorized for r in emulator.requests] == [False, True] * 3


def test_recording_resource_has_the_api_shape(emulator: TwilioEmulator) -> None:
    rec = emulator.add_recording(channels=2, duration=42)
    body = get(emulator, f"{rec.path}.json").json()
    assert body["sid"] == rec.sid and body["status"] == "completed"
    assert (body["duration"], body["channels"], body["encryption_details"]) == ("42", 2, None)
    assert body["uri"] == f"{rec.path}.json" and body["media_url"].endswith(rec.path)
    assert body["start_time"].endswith("+0000")  # RFC 2822


def test_media_formats_length_and_ranges(emulator: TwilioEmulator) -> None:
    rec = emulator.add_recording(size=10_000, channels=2)
    wav = get(emulator, rec.path)
    assert wav.headers["content-type"] == "audio/x-wav" and wav.content[:4] == b"RIFF"
    assert int(wav.headers["content-length"]) == 10_000 == len(wav.content)
    assert get(emulator, f"{rec.path}.wav").content == wav.content
    mp3 = get(emulator, f"{rec.path}.mp3")
    assert mp3.content[:3] == b"ID3" and mp3.headers["content-type"] == "audio/mpeg"
    part = get(emulator, rec.path, headers={"Range": "bytes=100-199"})
    assert (part.status_code, part.content) == (206, wav.content[100:200])
    assert part.headers["content-range"] == "bytes 100-199/10000"
    assert get(emulator, rec.path, headers={"Range": "bytes=20000-"}).status_code == 416


def test_encrypted_recordings_refuse_mp3(emulator: TwilioEmulator) -> None:
    rec = emulator.add_recording(encrypted=True)
    assert get(emulator, f"{rec.path}.mp3").json()["code"] == 16109
    assert get(emulator, f"{rec.path}.wav").status_code == 200


def test_unknown_recording_is_20404(emulator: TwilioEmulator) -> None:
    path = f"/2010-04-01/Accounts/{emulator.account_sid}/Recordings/RE{'0' * 32}.json"
    body = get(emulator, path).json()
    assert (body["status"], body["code"]) == (404, 20404) and path in body["message"]


def test_list_pages_and_filters(emulator: TwilioEmulator) -> None:
    base = datetime(2026, 11, 23, 12, tzinfo=UTC)
    recs = [emulator.add_recording(date_created=base + timedelta(minutes=i)) for i in range(5)]
    emulator.add_recording(date_created=base + timedelta(days=3))
    window = {"DateCreated>": "2026-11-23T12:00:00Z", "DateCreated<": "2026-11-23T13:00:00Z"}
    seen: list[str] = []
    page = get(emulator, list_path(emulator), params={**window, "PageSize": 2}).json()
    for _ in range(5):
        seen += [item["sid"] for item in page["recordings"]]
        if not page["next_page_uri"]:
            break
        page = get(emulator, page["next_page_uri"]).json()
    assert seen == [r.sid for r in reversed(recs)]  # newest first, each once
    day = get(emulator, list_path(emulator), params={"DateCreated": "2026-11-26"}).json()
    assert len(day["recordings"]) == 1
    by_call = get(emulator, list_path(emulator), params={"CallSid": recs[0].call_sid}).json()
    assert [item["sid"] for item in by_call["recordings"]] == [recs[0].sid]
    bad = get(emulator, list_path(emulator), params={"DateCreated>": "yesterday"})
    assert bad.status_code == 400


def test_faults_fire_in_order_then_clear(emulator: TwilioEmulator) -> None:
    rec = emulator.add_recording()
    emulator.inject("api", "429", retry_after=3)
    emulator.inject("api", "503")
    limited = get(emulator, f"{rec.path}.json")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    assert limited.json()["code"] == 20429
    assert get(emulator, f"{rec.path}.json").json()["code"] == 20503
    assert get(emulator, f"{rec.path}.json").status_code == 200
    emulator.inject("media", "redirect")
    moved = get(emulator, rec.path, follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"].startswith("http://localhost:")
    with pytest.raises(ValueError):
        emulator.inject("api", "redirect")


def test_callback_signer_matches_twilios_validator(emulator: TwilioEmulator) -> None:
    rec = emulator.add_recording()
    signer = TwilioCallbackSigner(emulator.auth_token)
    url = "https://calls.example.com/webhooks/twilio?x=1"
    params = callback_params(rec, status="absent", error_code=16101)
    body, headers = signer.sign(url, params)
    validator = RequestValidator(emulator.auth_token)
    assert validator.validate(url, MultiDict(params), headers["X-Twilio-Signature"])
    assert dict(params)["ErrorCode"] == "16101" and b"RecordingStatus=absent" in body
