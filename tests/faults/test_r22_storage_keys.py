"""R22 path traversal in ids: no provider recording id, however hostile, escapes its account's
prefix on disk or collides with another id's key; through the webhook route such an id is
either refused (400) or stored under a safely encoded key.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import select

from emulators.telnyx import recording_saved_body
from ledger import Recording
from storage import recording_key
from storage.disk import PARTIAL_DIR, DiskStorage
from storage.keys import check_key
from tests.faults.hypothesis_profile import CaseCounter, hostile
from tests.faults.webhook_routes import ROUTES, WebhookService, refused_shortly, webhook_service

CASES = CaseCounter()
HOSTILE_IDS = [
    "../../x",
    "..",
    ".",
    "a/b",
    "/etc/passwd",
    "%2e%2e",
    "%2e%2e%2fx",
    "..%2f..%2fx",
    "\x00",
    "a\x00b",
    "\\..\\x",
    "x" * 2048,
    "é" * 150,
    "📞-call",
    "\udcff",
    " spaces and\nnewlines ",
    "CON",
    "a" * 199 + "/",
]
# Any text, lone surrogates included (ids decoded leniently upstream must still map safely).
IDS = st.text(st.characters(codec=None), min_size=1, max_size=300) | st.sampled_from(HOSTILE_IDS)


@pytest.fixture(scope="module")
def disk(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DiskStorage]:
    yield DiskStorage(tmp_path_factory.mktemp("r22") / "recordings")
    CASES.report(request.config, "storage keys (R22)")


def _under(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), root]) == root


@pytest.mark.parametrize("recording_id", HOSTILE_IDS)
def test_r22_hostile_ids_give_one_safe_segment(recording_id: str) -> None:
    key = recording_key("telnyx", "acct-1", recording_id, "wav")
    segments = key.split("/")
    assert segments[:2] == ["telnyx", "acct-1"] and len(segments) == 4
    fanout = hashlib.sha256(recording_id.encode("utf-8", "surrogatepass")).hexdigest()[:2]
    assert segments[2] == fanout
    assert all(s not in ("", ".", "..") for s in segments)
    assert key.isascii() and "\x00" not in key and "\\" not in key
    assert len(segments[3]) <= 200 + len(".wav")
    check_key(key)


@hostile(max_examples=150)
@given(recording_id=IDS)
@example(recording_id="../../../../etc/passwd")
def test_r22_written_object_stays_under_its_account_prefix(
    disk: DiskStorage, recording_id: str
) -> None:
    """The disk backend writes each hostile id's key; its realpath is under
    ``<root>/<provider>/<account>/`` and it is read back intact."""
    CASES.add("R22", "disk write")
    key = recording_key("telnyx", "acct-1", recording_id, "wav")
    prefix = os.path.join(disk.root, "telnyx", "acct-1")
    path = os.path.join(disk.root, *key.split("/"))
    assert _under(path, prefix)
    if disk.stat(key) is None:  # the same id may be drawn again
        data = recording_id.encode("utf-8", "surrogatepass")
        assert disk.write(key, [data], content_type="audio/wav") == len(data)
        assert b"".join(disk.read(key)) == data
    assert os.path.isfile(path) and _under(path, prefix)


def test_r22_nothing_was_written_outside_the_prefix(disk: DiskStorage) -> None:
    """Runs after the property above (same module-scoped root)."""
    for folder, _dirs, files in os.walk(disk.root):
        for name in files:
            path = os.path.join(folder, name)
            assert _under(path, os.path.join(disk.root, "telnyx", "acct-1")), path
    assert os.listdir(os.path.join(disk.root, PARTIAL_DIR)) == []


@hostile(max_examples=300)
@given(ids=st.lists(IDS, min_size=2, max_size=6, unique=True))
@example(ids=["a/b", "a%2Fb", "a%252Fb"])
@example(ids=["x" * 201, "x" * 202])
def test_r22_distinct_ids_never_share_a_key(ids: list[str]) -> None:
    CASES.add("R22", "distinct keys")
    keys = {recording_key("telnyx", "acct-1", rid, "wav") for rid in ids}
    assert len(keys) == len(ids)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookService]:
    with webhook_service(tmp_path_factory.mktemp("r22-route")) as running:
        yield running


TELNYX = next(route for route in ROUTES if route.name == "telnyx-json@default")


@pytest.mark.parametrize("recording_id", HOSTILE_IDS)
def test_r22_hostile_id_through_the_webhook_route_is_400_or_safely_keyed(
    service: WebhookService, recording_id: str
) -> None:
    """A signed Telnyx webhook naming the id: refused with a short reason (nothing written), or
    accepted as a row whose storage key is safe."""
    CASES.add("R22", "webhook route")
    body = recording_saved_body(event_id=f"r22-{time.monotonic_ns()}")
    marker = b'"recording_id":"'
    start = body.index(marker) + len(marker)
    end = body.index(b'"', start)
    body = body[:start] + json.dumps(recording_id).encode()[1:-1] + body[end:]
    before = service.rows()
    response = service.post(TELNYX.path, body, TELNYX.sign(body, int(time.time())))
    if response.status_code != 200:
        assert response.status_code == 400, (response.status_code, response.text[:200])
        refused_shortly(response)
        assert service.rows() == before
        return
    with service.app.extensions["callrec"].sessions() as session:
        stored_id = session.execute(
            select(Recording.recording_key).where(Recording.id == response.json()["recordings"][0])
        ).scalar_one()
    assert stored_id == recording_id
    key = recording_key("telnyx", "default", stored_id, "mp3")
    check_key(key)
    assert key.startswith("telnyx/default/") and key.count("/") == 3
