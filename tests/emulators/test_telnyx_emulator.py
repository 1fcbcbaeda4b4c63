"""The Telnyx emulator over real HTTP on loopback: API, presigned audio, faults, webhook signer."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import nacl.exceptions
import nacl.signing
import pytest

from emulators.audio import BLOCK_SIZE, AudioSource
from emulators.server import LoopbackServer
from emulators.telnyx import (
    AudioFormat,
    EmulatedRecording,
    TelnyxEmulator,
    TelnyxWebhookSigner,
    recording_saved_body,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

TIMEOUT = httpx.Timeout(5.0)
# One TLS context for every client (building one per client costs ~30 ms); plain http anyway.
_TLS = ssl.create_default_context()


def _client(base_url: str = "", headers: dict[str, str] | None = None) -> httpx.Client:
    """A client that ignores proxy env vars (loopback) and shares one TLS context."""
    return httpx.Client(
        base_url=base_url, headers=headers, timeout=TIMEOUT, verify=_TLS, trust_env=False
    )


T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def api(telnyx_emulator: TelnyxEmulator) -> Iterator[httpx.Client]:
    """An authorised client on the emulator's API base."""
    headers = {"Authorization": f"Bearer {telnyx_emulator.api_key}"}
    with _client(telnyx_emulator.base_url, headers) as c:
        yield c


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A bare client for absolute (presigned) URLs."""
    with _client() as c:
        yield c


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic test-telnyx-key"])
def test_missing_or_wrong_key_is_401_with_documented_body(
    telnyx_emulator: TelnyxEmulator, http: httpx.Client, authorization: str | None
) -> None:
    rec = telnyx_emulator.add_recording()
    headers = {"Authorization": authorization} if authorization else {}
    for path in ("/recordings", f"/recordings/{rec.id}"):
        response = http.get(telnyx_emulator.base_url + path, headers=headers)
        assert response.status_code == 401
        assert response.json() == {
            "errors": [{"code": "401", "title": "Unauthorized", "detail": "Unauthorized"}]
        }


def test_rate_limit_headers_count_down(api: httpx.Client) -> None:
    first = api.get("/recordings")
    second = api.get("/recordings")
    assert first.headers["x-ratelimit-limit"] == "1000"
    assert int(second.headers["x-ratelimit-remaining"]) == (
        int(first.headers["x-ratelimit-remaining"]) - 1
    )
    assert 0 < int(first.headers["x-ratelimit-reset"]) <= 60


def test_list_paginates_in_creation_order(
    telnyx_emulator: TelnyxEmulator, api: httpx.Client
) -> None:
    ids = [telnyx_emulator.add_recording().id for _ in range(7)]
    seen: list[str] = []
    for number, expected_len in ((1, 3), (2, 3), (3, 1)):
        body = api.get("/recordings", params={"page[number]": number, "page[size]": 3}).json()
        assert len(body["data"]) == expected_len
        assert body["meta"] == {
            "total_pages": 3,
            "total_results": 7,
            "page_number": number,
            "page_size": 3,
        }
        seen += [item["id"] for item in body["data"]]
    assert seen == ids
    past_end = api.get("/recordings", params={"page[number]": 4, "page[size]": 3}).json()
    assert past_end["data"] == []
    default = api.get("/recordings").json()
    assert default["meta"] == {
        "total_pages": 1,
        "total_results": 7,
        "page_number": 1,
        "page_size": 20,
    }


def test_list_item_is_recording_response_data(
    telnyx_emulator: TelnyxEmulator, api: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording(started_at=T0, duration_millis=1500)
    (item,) = api.get("/recordings").json()["data"]
    assert item["id"] == rec.id
    assert item["record_type"] == "recording"
    assert item["status"] == "completed"
    assert item["source"] == "call"
    assert item["channels"] == "dual"
    assert item["recording_started_at"] == "2025-03-01T12:00:00.000Z"
    assert item["recording_ended_at"] == "2025-03-01T12:00:01.500Z"
    assert item["duration_millis"] == 1500
    assert item["from"] == "+15551230000"
    assert item["call_control_id"].startswith("v3:")
    assert set(item["download_urls"]) == {"mp3", "wav"}
    assert set(item) >= {
        "call_leg_id",
        "call_session_id",
        "conference_id",
        "connection_id",
        "created_at",
        "initiated_by",
        "to",
        "updated_at",
    }


def test_list_wrapped_wraps_each_item_in_data() -> None:
    with (
        TelnyxEmulator(list_wrapped=True) as emulator,
        _client() as client,
    ):
        rec = emulator.add_recording()
        response = client.get(
            f"{emulator.base_url}/recordings",
            headers={"Authorization": f"Bearer {emulator.api_key}"},
        )
        body = response.json()
        assert body["data"][0]["data"]["id"] == rec.id
        assert body["meta"]["total_results"] == 1


def test_list_filters(telnyx_emulator: TelnyxEmulator, api: httpx.Client) -> None:
    session = "5b1f4c3e-0000-4000-8000-000000000001"
    early = telnyx_emulator.add_recording(call_session_id=session, started_at=T0)
    late = telnyx_emulator.add_recording(
        call_session_id=session, started_at=T0 + timedelta(hours=1), from_="+15550000001"
    )
    other = telnyx_emulator.add_recording(started_at=T0 + timedelta(hours=2))

    def ids(**params: str) -> list[str]:
        response = api.get("/recordings", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    assert ids(**{"filter[call_session_id]": session}) == [early.id, late.id]
    assert ids(**{"filter[from]": "+15550000001"}) == [late.id]
    assert ids(**{"filter[call_leg_id]": other.call_leg_id}) == [other.id]
    assert ids(**{"filter[call_session_id]": "nope"}) == []
    created = {
        "filter[created_at][gte]": (T0 + timedelta(minutes=30)).isoformat(),
        "filter[created_at][lte]": "2025-03-01T13:01:00.000Z",  # late ends 13:01:00.000: inclusive
    }
    assert ids(**created) == [late.id]
    assert ids(**{"filter[start_time][gte]": "2025-03-01T14:00:00Z"}) == [other.id]
    assert ids(**{"filter[end_time][lte]": "2025-03-01T12:01:00Z"}) == [early.id]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("page[size]", "0"),
        ("page[size]", "251"),
        ("page[size]", "ten"),
        ("page[number]", "0"),
        ("filter[created_at][gte]", "yesterday"),
        ("filter[colour]", "blue"),
    ],
)
def test_bad_query_parameter_is_400_naming_it(api: httpx.Client, name: str, value: str) -> None:
    response = api.get("/recordings", params={name: value})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["source"] == {"parameter": name}
    assert error["code"] and error["title"] and error["detail"]


def test_page_size_bounds_are_accepted(telnyx_emulator: TelnyxEmulator, api: httpx.Client) -> None:
    telnyx_emulator.add_recording()
    for size in (1, 250):
        response = api.get("/recordings", params={"page[size]": size})
        assert response.json()["meta"]["page_size"] == size


def test_get_by_id_returns_fresh_download_urls(
    telnyx_emulator: TelnyxEmulator, api: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording()
    first = api.get(f"/recordings/{rec.id}")
    time.sleep(0.01)  # the expiry (ms) is part of the signature
    second = api.get(f"/recordings/{rec.id}")
    assert first.status_code == second.status_code == 200
    data = first.json()["data"]
    assert data["id"] == rec.id
    urls, later = data["download_urls"], second.json()["data"]["download_urls"]
    assert urls["mp3"] != later["mp3"]
    for fmt in ("mp3", "wav"):
        parts = urlsplit(urls[fmt])
        assert parts.netloc == telnyx_emulator.audio_host
        assert parts.path == f"/media/{rec.id}.{fmt}"
        query = dict(parse_qsl(parts.query))
        assert query["X-Amz-Expires"] == "600"
        assert len(query["X-Amz-Signature"]) == 64


def test_unknown_recording_is_404_with_documented_body(api: httpx.Client) -> None:
    response = api.get("/recordings/3fa85f64-5717-4562-b3fc-2c963f66afa6")
    assert response.status_code == 404
    assert response.json() == {
        "errors": [
            {
                "code": "10005",
                "title": "Resource not found",
                "detail": "The requested resource or URL could not be found.",
            }
        ]
    }


# -- audio ------------------------------------------------------------------------------------


def test_audio_bytes_match_audio_source(
    telnyx_emulator: TelnyxEmulator, http: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording(size=BLOCK_SIZE + 12345)
    urls = rec.download_urls()
    cases: list[tuple[AudioFormat, str, bytes]] = [
        ("mp3", "audio/mpeg", b"ID3"),
        ("wav", "audio/wav", b"RIFF"),
    ]
    for fmt, mime, magic in cases:
        response = http.get(urls[fmt])
        assert response.status_code == 200
        assert response.headers["content-type"] == mime
        assert response.headers["accept-ranges"] == "bytes"
        assert int(response.headers["content-length"]) == rec.audio(fmt).size
        assert response.content.startswith(magic)
        assert _sha256(response.content) == rec.audio(fmt).sha256()
    assert rec.audio("wav").size == 4 * rec.audio("mp3").size
    assert rec.audio("mp3").sha256() != rec.audio("wav").sha256()


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=100-199", 100, 200), ("bytes=5-", 5, None), ("bytes=-10", -10, None)],
)
def test_range_is_206_with_content_range(
    telnyx_emulator: TelnyxEmulator, http: httpx.Client, header: str, start: int, end: int | None
) -> None:
    rec = telnyx_emulator.add_recording(size=4096)
    whole = rec.audio("mp3").read()
    response = http.get(rec.download_urls()["mp3"], headers={"Range": header})
    assert response.status_code == 206
    expected = whole[start:end]
    assert response.content == expected
    first = start % len(whole)
    assert response.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/4096"


def test_unsatisfiable_range_is_416(telnyx_emulator: TelnyxEmulator, http: httpx.Client) -> None:
    rec = telnyx_emulator.add_recording(size=100)
    response = http.get(rec.download_urls()["mp3"], headers={"Range": "bytes=100-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */100"


def test_head_has_headers_and_no_body(telnyx_emulator: TelnyxEmulator, http: httpx.Client) -> None:
    rec = telnyx_emulator.add_recording(size=5000)
    response = http.head(rec.download_urls()["wav"])
    assert response.status_code == 200
    assert response.headers["content-length"] == "20000"
    assert response.content == b""


def test_tampered_or_unsigned_url_is_access_denied(
    telnyx_emulator: TelnyxEmulator, http: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording()
    other = telnyx_emulator.add_recording()
    url = rec.download_urls()["mp3"]
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    longer = {**query, "X-Amz-Expires": "86400"}
    candidates = [
        url.replace(rec.id, other.id),
        url.replace(".mp3?", ".wav?"),
        f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(longer)}",
        f"{parts.scheme}://{parts.netloc}{parts.path}",
    ]
    for candidate in candidates:
        response = http.get(candidate)
        assert response.status_code == 403, candidate
        assert "<Code>AccessDenied</Code><Message>Access Denied</Message>" in response.text


def test_expired_url_is_403_request_has_expired(http: httpx.Client) -> None:
    with TelnyxEmulator(url_ttl_seconds=0.5) as emulator:
        rec = emulator.add_recording(size=1000)
        url = rec.download_urls()["mp3"]
        assert http.get(url).status_code == 200
        time.sleep(1.0)
        response = http.get(url)
        assert response.status_code == 403
        assert "<Code>AccessDenied</Code>" in response.text
        assert "<Message>Request has expired</Message>" in response.text
        assert http.get(rec.download_urls()["mp3"]).status_code == 200  # a fresh one works


def test_removed_recording_is_404(telnyx_emulator: TelnyxEmulator, api: httpx.Client) -> None:
    rec = telnyx_emulator.add_recording()
    url = rec.download_urls()["mp3"]
    telnyx_emulator.remove_recording(rec.id)
    assert api.get(f"/recordings/{rec.id}").status_code == 404
    response = api.get(url)
    assert response.status_code == 404
    assert "<Code>NoSuchKey</Code>" in response.text


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["429", "500", "503"])
def test_api_fault_fires_once_then_clears(
    telnyx_emulator: TelnyxEmulator, api: httpx.Client, kind: str
) -> None:
    rec = telnyx_emulator.add_recording()
    telnyx_emulator.inject("api", kind)  # type: ignore[arg-type]
    faulty = api.get(f"/recordings/{rec.id}")
    assert faulty.status_code == int(kind)
    assert faulty.json()["errors"][0]["code"]
    if kind == "429":
        assert faulty.json() == {
            "errors": [
                {
                    "code": "10011",
                    "title": "Too many requests",
                    "detail": "You have exceeded the maximum number of allowed requests.",
                }
            ]
        }
        assert faulty.headers["retry-after"] == "1"
        assert faulty.headers["x-ratelimit-reset"] == "1"
    if kind == "500":
        assert faulty.json()["errors"][0]["title"] == "Internal Server Error"
    assert api.get(f"/recordings/{rec.id}").status_code == 200
    assert telnyx_emulator.pending_faults() == []


def test_fault_times_and_options(telnyx_emulator: TelnyxEmulator, api: httpx.Client) -> None:
    telnyx_emulator.inject("api", "429", times=2, retry_after=7)
    statuses = [api.get("/recordings") for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["retry-after"] == "7"


def test_slow_fault_delays_then_answers(telnyx_emulator: TelnyxEmulator, api: httpx.Client) -> None:
    telnyx_emulator.inject("api", "slow", seconds=0.3)
    started = time.monotonic()
    assert api.get("/recordings").status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert api.get("/recordings").status_code == 200
    assert time.monotonic() - started < 0.3


@pytest.mark.parametrize(
    ("kind", "status", "needle"),
    [
        ("429", 429, "<Code>SlowDown</Code>"),
        ("500", 500, "<Code>InternalError</Code>"),
        ("503", 503, "<Code>ServiceUnavailable</Code>"),
        ("expired", 403, "<Message>Request has expired</Message>"),
    ],
)
def test_audio_fault_fires_once_then_clears(
    telnyx_emulator: TelnyxEmulator, http: httpx.Client, kind: str, status: int, needle: str
) -> None:
    rec = telnyx_emulator.add_recording(size=2000)
    url = rec.download_urls()["mp3"]
    telnyx_emulator.inject("audio", kind)  # type: ignore[arg-type]
    faulty = http.get(url)
    assert faulty.status_code == status
    assert needle in faulty.text
    ok = http.get(url)
    assert ok.status_code == 200
    assert _sha256(ok.content) == rec.audio("mp3").sha256()


def test_truncate_cuts_the_body_short_once(
    telnyx_emulator: TelnyxEmulator, http: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording(size=200_000)
    url = rec.download_urls()["mp3"]
    telnyx_emulator.inject("audio", "truncate", after_bytes=70_000)
    assert http.head(url).status_code == 200  # HEAD does not consume a truncate
    received = bytearray()
    with http.stream("GET", url) as response:
        assert response.headers["content-length"] == "200000"
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_bytes():
                received += chunk
    assert len(received) == 70_000
    assert bytes(received) == rec.audio("mp3").read(0, 70_000)
    assert _sha256(http.get(url).content) == rec.audio("mp3").sha256()


def test_truncate_defaults_to_half_of_a_range(
    telnyx_emulator: TelnyxEmulator, http: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording(size=10_000)
    telnyx_emulator.inject("audio", "truncate")
    received = bytearray()
    with http.stream("GET", rec.download_urls()["mp3"], headers={"Range": "bytes=1000-"}) as r:
        assert r.status_code == 206
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_bytes():
                received += chunk
    assert len(received) == 4_500


def test_inject_rejects_nonsense(telnyx_emulator: TelnyxEmulator) -> None:
    with pytest.raises(ValueError, match="does not apply"):
        telnyx_emulator.inject("api", "truncate")
    with pytest.raises(ValueError, match="target"):
        telnyx_emulator.inject("sms", "500")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown options"):
        telnyx_emulator.inject("api", "500", seconds=3)
    telnyx_emulator.inject("audio", "500", times=3)
    telnyx_emulator.inject("api", "503")
    assert telnyx_emulator.pending_faults() == [("api", "503", 1), ("audio", "500", 3)]
    telnyx_emulator.clear_faults()
    assert telnyx_emulator.pending_faults() == []


def test_requests_log_paths_without_query(
    telnyx_emulator: TelnyxEmulator, api: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording(size=10)
    api.get("/recordings", params={"page[size]": 5})
    api.get(rec.download_urls()["mp3"])
    api.get("/recordings/missing")
    log = telnyx_emulator.requests
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/v2/recordings", 200),
        ("GET", f"/media/{rec.id}.mp3", 200),
        ("GET", "/v2/recordings/missing", 404),
    ]
    assert log[0].at <= log[1].at <= log[2].at


# -- webhook signer ---------------------------------------------------------------------------


def test_signer_headers_verify_with_the_public_key(telnyx_signer: TelnyxWebhookSigner) -> None:
    body = recording_saved_body()
    headers = telnyx_signer.headers(body, timestamp=1_700_000_000)
    assert headers["telnyx-timestamp"] == "1700000000"
    assert headers["content-type"] == "application/json"
    public = base64.b64decode(telnyx_signer.public_key_b64)
    assert len(public) == 32
    signature = base64.b64decode(headers["telnyx-signature-ed25519"])
    assert len(signature) == 64
    verify_key = nacl.signing.VerifyKey(public)
    verify_key.verify(b"1700000000|" + body, signature)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        verify_key.verify(b"1700000001|" + body, signature)
    now = int(telnyx_signer.headers(body)["telnyx-timestamp"])
    assert abs(now - time.time()) < 5


def test_signer_accepts_a_given_key() -> None:
    key = nacl.signing.SigningKey(b"\x01" * 32)
    signer = TelnyxWebhookSigner(key)
    assert signer.public_key_b64 == base64.b64encode(bytes(key.verify_key)).decode()


def test_recording_saved_body_from_an_emulated_recording(
    telnyx_emulator: TelnyxEmulator, http: httpx.Client
) -> None:
    rec: EmulatedRecording = telnyx_emulator.add_recording(size=3000)
    body = recording_saved_body(rec, event_id="evt-1", attempt=2)
    assert b" " not in body  # compact
    envelope = json.loads(body)
    data, payload = envelope["data"], envelope["data"]["payload"]
    assert data["record_type"] == "event"
    assert data["event_type"] == "call.recording.saved"
    assert data["id"] == "evt-1"
    assert data["occurred_at"].endswith("Z")
    assert envelope["meta"] == {
        "attempt": 2,
        "delivered_to": "http://example.invalid/webhooks/telnyx",
    }
    assert payload["recording_id"] == rec.id
    assert payload["call_session_id"] == rec.call_session_id
    assert payload["call_control_id"] == rec.call_control_id
    assert payload["client_state"] is None
    assert payload["format"] == "mp3"
    assert payload["public_recording_urls"] == {}
    audio = http.get(payload["recording_urls"]["mp3"])
    assert _sha256(audio.content) == rec.audio("mp3").sha256()

    bare = json.loads(recording_saved_body(rec, include_recording_id=False, call_session_id="s1"))
    assert "recording_id" not in bare["data"]["payload"]
    assert bare["data"]["payload"]["call_session_id"] == "s1"
    assert bare["data"]["id"] != data["id"]


# -- building blocks --------------------------------------------------------------------------


def test_audio_source_is_the_same_whatever_the_chunking() -> None:
    source = AudioSource(2 * BLOCK_SIZE + 777, "chunks", prefix=b"ID3")
    whole = source.read()
    assert len(whole) == source.size
    assert _sha256(whole) == source.sha256()
    for start, end, chunk in ((0, None, 4093), (BLOCK_SIZE - 5, BLOCK_SIZE + 5, 3), (10, 10, 8)):
        parts = list(source.iter_bytes(start, end, chunk))
        assert b"".join(parts) == whole[start:end]
        assert all(len(p) == chunk for p in parts[:-1])
    assert AudioSource(100, "other").read() != AudioSource(100, "chunks").read()


def test_loopback_server_port_in_use_and_idempotent_stop() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    with LoopbackServer(app) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        with _client() as client:
            assert client.get(server.url).status_code == 204
        with pytest.raises(OSError, match="cannot bind"):
            LoopbackServer(app, port=server.port).start()
    server.stop()
