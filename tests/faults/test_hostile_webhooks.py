"""R16-R20 on every webhook route: the real app over real HTTP (``LoopbackServer``).

Real HTTP, not Flask's test client, because what matters is what the server makes of the bytes:
duplicated headers are sent as two raw header lines (httpx sends a list of pairs as is) and the
server joins them, header values are latin-1 bytes, bodies are streamed chunked over a socket.
Every refusal must be a 4xx with one short JSON reason and leave the ledger untouched (the web
process never publishes: the relay publishes ledger rows, so no new row means nothing queued).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.faults.hypothesis_profile import CaseCounter, hostile
from tests.faults.raw_http import post_raw
from tests.faults.webhook_routes import (
    BAD_SIGNATURE,
    FORM,
    ROUTES,
    Headers,
    Route,
    WebhookService,
    refused_shortly,
    webhook_service,
)

TIMESTAMPED = [route for route in ROUTES if route.timestamped]
CASES = CaseCounter()
# Header values a client can put on the wire: printable latin-1 (the server decodes latin-1).
# h11 (httpx) refuses a value with leading or trailing whitespace, as RFC 9110 does. Digits
# that are not ASCII ('²' is latin-1) are digits to str.isdigit but not to int().
HEADER_TEXT = st.text(
    st.characters(codec="latin-1", categories=("L", "N", "P", "S", "Zs")), max_size=80
).map(str.strip) | st.sampled_from(["²", "1²", "-1", "+1", "1_000", "0x10", "1e3", "v1,", ";;;"])


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[WebhookService]:
    with webhook_service(tmp_path_factory.mktemp("hostile")) as running:
        yield running
        # The web process never touched the broker (it would have created its SQLite file).
        assert not running.broker_file.exists()
    CASES.report(request.config, "hostile webhooks (R16-R20)")


def send(service: WebhookService, row: str, route: Route | str, path: str, body: bytes,
         headers: Headers) -> httpx.Response:  # fmt: skip
    CASES.add(row, route if isinstance(route, str) else route.name)
    return service.post(path, body, headers)


def assert_bad_signature(response: httpx.Response) -> None:
    assert (response.status_code, response.json()) == (401, BAD_SIGNATURE), response.text[:300]


# -- R16: clock skew ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", TIMESTAMPED, ids=lambda r: r.name)
def test_r16_timestamp_299_s_either_way_accepted_301_s_refused(
    service: WebhookService, route: Route
) -> None:
    """The app's receive clock is pinned (``IngestState.clock``) so load cannot move the edge.
    Quo Standard Webhooks' library also checks its own real clock: ``now`` is the next whole
    second, so that clock stays within 300 s unless the request takes over a second."""
    for skew, accepted in ((-299, True), (299, True), (-301, False), (301, False)):
        now = int(time.time()) + 1
        service.clock_offset = now - time.time()  # the app sees exactly ``now``
        body = route.new_body()
        try:
            with service.writes_nothing() if not accepted else contextlib.nullcontext():
                response = send(
                    service, "R16", route, route.path, body, route.sign(body, now + skew)
                )
        finally:
            service.clock_offset = 0.0
        if accepted:
            assert (response.status_code, response.json()["status"]) == (200, "accepted"), skew
        else:
            assert_bad_signature(response)


# -- R17: forged, missing, duplicated, wrong-account signatures -----------------------------------

MUTATIONS = (
    "tamper_body",
    "tamper_signature",
    "drop",
    "duplicate_same",
    "duplicate_junk",
    "replace_junk",
    "enormous_value",
    "wrong_account",
    "unknown_account",
)


@st.composite
def forged_requests(draw: st.DrawFn) -> tuple[Route, str, str, bytes, Headers]:
    """A validly signed delivery on some route, then damaged in one way."""
    route = draw(st.sampled_from(ROUTES), label="route")
    kind = draw(st.sampled_from(MUTATIONS), label="mutation")
    body = route.new_body()
    headers = route.sign(body, int(time.time()))
    path = route.path
    names = route.signature_headers
    name = draw(st.sampled_from(names), label="header")
    at = next(i for i, (key, _) in enumerate(headers) if key == name)
    value = str(headers[at][1])
    if kind == "tamper_body":
        pos, bit = draw(st.integers(0, len(body) - 1)), draw(st.integers(0, 7))
        tampered = bytearray(body)
        tampered[pos] ^= 1 << bit
        if route.provider == "twilio":  # Twilio signs the decoded parameters, not the bytes
            decode = lambda raw: sorted(parse_qsl(raw.decode("utf-8", "replace"), True))  # noqa: E731
            assume(decode(bytes(tampered)) != decode(body))
        body = bytes(tampered)
    elif kind == "tamper_signature":
        pos = draw(st.integers(0, len(value) - 1))
        char = draw(st.sampled_from("AQgw+/=019aZ ,;.v"))
        assume(char != value[pos])
        headers[at] = (name, (value[:pos] + char + value[pos + 1 :]).strip())
    elif kind == "drop":
        dropped = draw(st.sets(st.sampled_from(names), min_size=1))
        headers = [(k, v) for k, v in headers if k not in dropped]
    elif kind in ("duplicate_same", "duplicate_junk"):
        extra = value if kind == "duplicate_same" else draw(HEADER_TEXT).encode("latin-1")
        headers.insert(at + draw(st.sampled_from((0, 1))), (name, extra))
    elif kind == "replace_junk":
        headers[at] = (name, draw(HEADER_TEXT).encode("latin-1"))
    elif kind == "enormous_value":
        size = draw(st.sampled_from((8 * 1024, 32 * 1024, 60 * 1024)))
        unit = draw(st.sampled_from(("9", "A", "v1,", "v1,x ", "\xb2")))
        headers[at] = (name, (unit * size)[:size].strip().encode("latin-1"))
    elif kind == "wrong_account":
        headers = route.sign(body, int(time.time()), account=route.wrong_account())
    else:  # a signature valid for the route's own account, sent to an account that does not exist
        # Any segment but a slash (with one, the path is no webhook route: Flask's 404).
        account = draw(st.text(min_size=1, max_size=30).filter(lambda a: "/" not in a))
        assume(account not in ("default", "east"))
        path = f"/webhooks/{route.provider}/{quote(account, safe='').replace('.', '%2E')}"
    return route, kind, path, body, headers


@hostile(max_examples=220)
@given(forged_requests())
def test_r17_forged_missing_duplicated_or_wrong_account_signature_is_401_alike(
    service: WebhookService, case: tuple[Route, str, str, bytes, Headers]
) -> None:
    route, _kind, path, body, headers = case
    with service.writes_nothing():
        response = send(service, "R17", route, path, body, headers)
    assert_bad_signature(response)


def test_r17_unknown_account_bad_signature_missing_header_answer_alike(
    service: WebhookService,
) -> None:
    """Status, body and headers (but Date) are the same whichever check failed, so a caller
    learns neither which accounts exist nor why its signature failed."""
    for route in ROUTES:
        body = route.new_body()
        good = route.sign(body, int(time.time()))
        variants = {
            "unknown account": (f"/webhooks/{route.provider}/north", good),
            "unknown provider": (f"/webhooks/{route.provider}x/{route.account}", good),
            "bad signature": (route.path, route.sign(body + b" ", int(time.time()))),
            "missing header": (
                route.path,
                [(k, v) for k, v in good if k not in route.signature_headers],
            ),
            "wrong account": (
                route.path,
                route.sign(body, int(time.time()), route.wrong_account()),
            ),
        }
        if route.timestamped:  # Twilio signs no timestamp: an old signature is still valid
            variants["stale"] = (route.path, route.sign(body, int(time.time()) - 3600))
        seen = {}
        for label, (path, headers) in variants.items():
            with service.writes_nothing():
                response = send(service, "R17-alike", route, path, body, headers)
                assert response.status_code != 200, (route.name, label)
                shown = {k: v for k, v in response.headers.items() if k.lower() != "date"}
                seen[label] = (response.status_code, response.content, shown)
        assert len(set(map(repr, seen.values()))) == 1, (route.name, seen)
        assert seen["bad signature"][0] == 401


@pytest.mark.parametrize("path", ["/webhooks/voicegenie", "/webhooks/voicegenie/east",
                                  "/webhooks/voicegenie/north", "/webhooks/voxo/any"])  # fmt: skip
def test_r17_routes_without_webhooks_answer_404_alike_for_every_account(
    service: WebhookService, path: str
) -> None:
    with service.writes_nothing():
        response = send(service, "R17", path.split("/")[2], path, b"{}",
                        [("content-type", "application/json")])  # fmt: skip
    assert response.status_code == 404
    assert "sends no" in str(refused_shortly(response)["error"])


# -- R18: replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_r18_replay_at_10_s_is_a_duplicate_and_at_400_s_refused(
    service: WebhookService, route: Route
) -> None:
    """The captured request is resent byte for byte with the app's clock moved on. Twilio
    signs no timestamp: its replay at +400 s is still only a duplicate (nothing new queued)."""
    body = route.new_body()
    headers = route.sign(body, int(time.time()))
    first = send(service, "R18", route, route.path, body, headers)
    assert (first.status_code, first.json()["status"]) == (200, "accepted")
    try:
        with service.writes_nothing():
            service.clock_offset = 10
            again = send(service, "R18", route, route.path, body, headers)
            assert (again.status_code, again.json()["status"]) == (200, "duplicate")
            service.clock_offset = 400
            late = send(service, "R18", route, route.path, body, headers)
    finally:
        service.clock_offset = 0.0
    if route.timestamped:
        assert_bad_signature(late)
    else:
        assert (late.status_code, late.json()["status"]) == (200, "duplicate")


# -- R19: oversized bodies and headers ------------------------------------------------------------

MIB = 1024 * 1024
SIZE_PATHS = [
    "/webhooks/telnyx",
    "/webhooks/quo/east",
    "/webhooks/twilio",
    "/webhooks/telnyx/north",
]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", SIZE_PATHS)
def test_r19_2_mib_body_is_413_before_1_mib_is_read(
    service: WebhookService, path: str, chunked: bool
) -> None:
    """A 2 MiB body, announced or chunked, to known and unknown accounts alike: 413 with a short
    JSON reason, and the app read at most the limit (256 KiB) plus one read of the body (the
    ``InputMeter`` counts what it took from ``wsgi.input``)."""
    limit = service.app.extensions["callrec"].settings.max_body_bytes
    with service.writes_nothing():
        CASES.add("R19", path)
        answer = post_raw(service.server.port, path, [("Content-Type", "application/json")],
                          2 * MIB, chunked=chunked)  # fmt: skip
    assert answer.status == 413, answer
    document = json.loads(answer.body)
    assert set(document) == {"error"} and len(document["error"]) <= 200
    read = service.meter.read_bytes
    print(f"R19 {path} {'chunked' if chunked else 'content-length'}: read {read} B, "
          f"client queued {answer.sent} B before the answer")  # fmt: skip
    assert read <= limit + 64 * 1024 < MIB
    if not chunked:
        assert read == 0  # the announced length alone is refused


@pytest.mark.parametrize(
    "headers",
    [[("X-Pad", "a" * 70_000)], [(f"X-Pad-{i}", "a") for i in range(150)]],
    ids=["one 70 KB header line", "150 headers"],
)
def test_r19_enormous_or_too_many_headers_are_refused_short(
    service: WebhookService, headers: list[tuple[str, str]]
) -> None:
    """Refused by the HTTP server before the app (http.server: 64 KiB per line, 100 headers):
    431 with a short body. Values up to 60 KB reach the app and are signature failures (R17)."""
    with service.writes_nothing():
        CASES.add("R19", "headers")
        answer = post_raw(service.server.port, "/webhooks/telnyx", headers, 2)
    assert answer.status == 431 and len(answer.body) < 1024, answer


# -- R20: malformed bodies, bombs, wrong content type ---------------------------------------------

JSON_BOMBS = {
    "open brace": b"{",
    "10^5 brackets": b"[" * 100_000,
    "5000-digit int": b'{"data":{"id":' + b"7" * 5000 + b"}}",
    "bom bytes": b"\xff\xfe",
    "invalid utf-8 in a string": b'{"data":{"id":"\xc3\x28","event_type":"call.completed"}}',
    "empty": b"",
    "null": b"null",
    "deep but parseable": b'{"data":' + b"[" * 900 + b"]" * 900 + b"}",
}
FORM_BOMBS = {
    "bom bytes": b"\xff\xfe",
    "invalid utf-8 escape": b"RecordingSid=%ff%fe&RecordingStatus=completed",
    "stray token": b"RecordingSid",
    "repeated key, two values": b"RecordingSid=RE1&RecordingSid=RE2&RecordingStatus=completed",
    "empty": b"",
    "too many fields": b"&".join(b"k%d=v" % i for i in range(300)),
}


def _bomb_cases() -> Iterator[tuple[Route, str, bytes]]:
    for route in ROUTES:
        bombs = JSON_BOMBS if route.content_type == "application/json" else FORM_BOMBS
        for label, body in bombs.items():
            yield route, label, body


@pytest.mark.parametrize(
    ("route", "label", "body"), list(_bomb_cases()), ids=lambda v: getattr(v, "name", None)
)
def test_r20_signed_malformed_body_is_400(
    service: WebhookService, route: Route, label: str, body: bytes
) -> None:
    with service.writes_nothing():
        response = send(service, "R20", route, route.path, body, route.sign(body, int(time.time())))
    if route.name.startswith("quo-standard") and label in (
        "bom bytes",
        "invalid utf-8 in a string",
    ):
        # Standard Webhooks sign text: no sender can sign bytes that are not UTF-8.
        assert_bad_signature(response)
        return
    assert response.status_code == 400, (label, response.status_code, response.text[:200])
    refused_shortly(response)


#: Per provider, a content type its webhooks never use though a neighbour's do.
FOREIGN = {"telnyx": "application/json-seq", "quo": FORM, "twilio": "application/json"}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", None, "foreign"],
)
def test_r20_signed_body_with_a_wrong_content_type_is_415(
    service: WebhookService, route: Route, content_type: str | None
) -> None:
    if content_type == "foreign":
        content_type = FOREIGN[route.provider]
    body = route.new_body()
    headers = [(k, v) for k, v in route.sign(body, int(time.time())) if k != "content-type"]
    if content_type is not None:
        headers.append(("content-type", content_type))
    with service.writes_nothing():
        response = send(service, "R20", route, route.path, body, headers)
    assert response.status_code == 415, (content_type, response.text[:200])
    refused_shortly(response)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.sampled_from(["\x00", "a\udcffb", "\ud83d\udcde", "../../x", "x" * 300]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)  # fmt: skip
EVENT_TYPES = st.sampled_from(
    ["call.recording.saved", "call.completed", "call.recording.completed", "x"]
)


@st.composite
def hostile_bodies(draw: st.DrawFn, route: Route) -> bytes:
    """Bytes of every kind: raw, truncated or spliced valid events, JSON of the right shape with
    wrong types, forms with repeated and unknown keys and bad escapes."""
    valid = route.new_body()
    kind = draw(st.sampled_from(("raw", "truncated", "spliced", "shaped")))
    if kind == "raw":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "spliced":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + draw(st.binary(min_size=1, max_size=8)) + valid[at:]
    if route.content_type == "application/json":
        data = draw(st.dictionaries(
            st.sampled_from(["id", "event_type", "type", "payload", "object", "resource"]),
            JSON_VALUES | EVENT_TYPES, max_size=5,
        ))  # fmt: skip
        document = {"data": data, "type": draw(EVENT_TYPES), "id": draw(JSON_VALUES)}
        return json.dumps(document).encode()
    keys = st.sampled_from(["RecordingSid", "RecordingStatus", "AccountSid", "CallSid", "x"])
    values = st.text(max_size=20) | st.sampled_from(["completed", "absent", "RE" + "a" * 32])
    pairs = draw(st.lists(st.tuples(keys, values), max_size=8))
    raw = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    if draw(st.booleans()):
        raw += draw(st.sampled_from(["&%zz=1", "&a=%ff", "&&", "&=x", "&a=b=c", ";"]))
    return raw.encode()


@st.composite
def signed_hostile_bodies(draw: st.DrawFn) -> tuple[Route, bytes]:
    route = draw(st.sampled_from(ROUTES))
    return route, draw(hostile_bodies(route))


@hostile(max_examples=200)
@given(signed_hostile_bodies())
def test_r20_fuzzed_signed_bodies_never_5xx_and_refusals_write_nothing(
    service: WebhookService, case: tuple[Route, bytes]
) -> None:
    route, body = case
    before = service.rows()
    response = send(
        service, "R20-fuzz", route, route.path, body, route.sign(body, int(time.time()))
    )
    if response.status_code == 200:  # a well-formed event after all: accepted, ignored...
        assert response.json()["status"] in ("accepted", "duplicate", "ignored")
        return
    refused_shortly(response)
    assert service.rows() == before
    if route.name.startswith("quo-standard") and response.status_code == 401:
        with pytest.raises(UnicodeDecodeError):  # only text can be signed (Standard Webhooks)
            body.decode("utf-8")
        return
    assert response.status_code in (400, 415), (response.status_code, response.text[:200])
