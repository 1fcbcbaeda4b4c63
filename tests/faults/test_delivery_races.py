"""Deliveries that repeat, race and arrive out of order (reliability.md §4 R13-R15, R25) on one
embedded stack with beat: the Telnyx and Twilio emulators over HTTP, the web app, a real relay,
beat (sweeper every second, polls every 10 s) and Celery worker process; SQLite ledger and
broker, disk storage.

* R25 a webhook never sent: the recording is listed only on page 3 of 5; the poll stores it;
* R13 one signed webhook x100 at once;
* R14 webhooks, a poll, a backfill process and retries racing for 10 recordings;
* R15 Telnyx events redelivered around other event types; Twilio ``completed`` then
  ``in-progress`` and ``absent``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from emulators.twilio import EmulatedRecording as TwilioRecording
from emulators.twilio import TwilioCallbackSigner, TwilioEmulator, callback_params
from ledger.models import Delivery, State
from storage import recording_key
from tests.e2e.stack import Stack, ago, backfill, start_stack_with
from tests.faults.provider_stack import (
    clean_faults,
    logged_errors,
    request_poll,
    states_of,
    tally_of,
    wait_for_next_poll,
    worker_log,
)
from tests.faults.tally import tally

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SETTINGS = {
    "CALLREC_POLL_INTERVAL_SECONDS": "10",
    "CALLREC_SHUTDOWN_GRACE_SECONDS": "0",  # a quick teardown
}


@dataclass
class Races:
    stack: Stack
    twilio: TwilioEmulator

    def twilio_callback(self, rec: TwilioRecording, **kwargs: object) -> httpx.Response:
        """A signed Twilio recording status callback, to the URL the app sees."""
        url = f"{self.stack.web_url}/webhooks/twilio"
        signer = TwilioCallbackSigner(self.twilio.auth_token)
        body, headers = signer.sign(url, callback_params(rec, **kwargs))  # type: ignore[arg-type]
        return httpx.post(url, content=body, headers=headers, timeout=20)


@pytest.fixture(scope="module")
def races(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Races]:
    twilio = TwilioEmulator().start()
    stack = start_stack_with(
        twilio,
        tmp_path_factory.mktemp("delivery-races"),
        beat=True,
        **SETTINGS,
        **twilio.settings_env(),
    )
    try:
        yield Races(stack, twilio)
        assert logged_errors(stack) == []
    finally:
        stack.close()


@pytest.fixture
def stack(races: Races) -> Iterator[Stack]:
    yield from clean_faults(races.stack)


def _runs(pages: list[int]) -> list[list[int]]:
    """Page numbers served, cut into one list per walk (each walk starts at page 1)."""
    runs: list[list[int]] = []
    for number in pages:
        if number == 1 or not runs:
            runs.append([])
        runs[-1].append(number)
    return runs


def test_r25_missed_webhook_listed_on_page_3_of_5_is_stored_once_by_the_poll(
    stack: Stack,
) -> None:
    stack.emulator.max_page_size = 1  # one recording per page: five pages
    recs = [
        stack.emulator.add_recording(size=30_000, started_at=ago(minutes=6 - n)) for n in range(5)
    ]
    missed = recs[2]  # the third in list order: page 3 of 5
    for rec in recs:
        if rec is not missed:
            stack.announce(rec)
    request_poll(stack)  # beat polls every 10 s as well
    row = stack.wait_final(missed.id, timeout=60)
    assert row.state == "stored" and row.source == "poll" and row.attempts == 1
    request_poll(stack)
    wait_for_next_poll(stack)  # a later poll lists it again (overlap) and changes nothing
    runs = _runs(list(stack.emulator.list_pages_served))
    assert runs and all(run == list(range(1, len(run) + 1)) for run in runs)  # in order, no loop
    assert [1, 2, 3, 4, 5] in runs and max(map(len, runs)) == 5  # terminated at the last page
    (again,) = [r for r in stack.rows() if r.recording_key == missed.id]
    assert (again.id, again.state, again.attempts) == (row.id, "stored", 1)
    result = tally_of(stack, recs)
    result.assert_clean()
    assert result.stored == 5
    print(f"R25: page walks {runs}")


def test_r13_same_signed_webhook_100_at_once_is_one_row_one_object(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=200_000)
    event_id = f"r13-{rec.id}"
    body = stack.signer.recording_saved_body(rec, event_id=event_id)
    headers = stack.signer.headers(body)
    start = threading.Barrier(100, timeout=60)

    def deliver(_: int) -> tuple[int, str]:
        start.wait()
        response = stack.send(body, headers)
        return response.status_code, response.json().get("status", "")

    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(deliver, range(100)))
    answers += [deliver_one(stack, body, headers) for _ in range(3)]  # and one by one after
    redelivery = stack.signer.recording_saved_body(rec, attempt=2)  # new event id, same recording
    answers.append(deliver_one(stack, redelivery, None))
    assert [status for status, _ in answers] == [200] * 104
    assert sorted(kind for _, kind in answers[:100]).count("accepted") == 1
    row = stack.wait_final(rec.id)
    assert row.state == "stored" and row.attempts == 1
    with stack.sessions() as session:
        deliveries = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.delivery_id == event_id)
        )
    assert deliveries == 1
    assert [r.recording_key for r in stack.rows()].count(rec.id) == 1
    tally_of(stack, [rec]).assert_clean()


def deliver_one(stack: Stack, body: bytes, headers: dict[str, str] | None) -> tuple[int, str]:
    response = stack.send(body, headers)
    return response.status_code, response.json().get("status", "")


def test_r14_webhooks_poll_backfill_and_retries_racing_store_one_object_each(
    stack: Stack,
) -> None:
    recs = [stack.emulator.add_recording(size=60_000, started_at=ago(minutes=1)) for _ in range(10)]
    stack.emulator.inject("audio", "503", times=4)  # first downloads fail: retries join the race
    since, until = ago(minutes=10).isoformat(), datetime.now(UTC).isoformat()
    backfilled: list[int] = []
    racer = threading.Thread(
        target=lambda: backfilled.append(
            backfill(stack, "--since", since, "--until", until).returncode
        )
    )
    racer.start()
    request_poll(stack)
    bodies = [stack.signer.recording_saved_body(rec) for rec in recs for _ in range(2)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        statuses = list(pool.map(lambda body: stack.send(body).status_code, bodies))
    racer.join(150)
    assert statuses == [200] * len(bodies) and backfilled == [0]
    rows = [stack.wait_final(rec.id, timeout=60) for rec in recs]
    assert all(row.state == "stored" for row in rows)
    keys = [r.recording_key for r in stack.rows()]
    assert all(keys.count(rec.id) == 1 for rec in recs)
    result = tally_of(stack, recs)
    result.assert_clean()
    assert result.stored == 10
    # The losers exit cleanly: their claim is refused and the task ends "skipped".
    ids = {row.id for row in rows}
    skipped = sum(
        1
        for entry in worker_log(stack)
        if "'skipped'" in str(entry.get("msg", "")) and "callrec.capture" in str(entry.get("msg"))
    )
    assert logged_errors(stack) == []
    print(
        f"R14: {len(bodies)} webhooks + poll + backfill for {len(ids)} recordings, "
        f"attempts {[row.attempts for row in rows]}, {skipped} capture tasks skipped (losers)"
    )


def test_r15_out_of_order_and_redelivered_events_never_regress_and_store_once(
    races: Races, stack: Stack
) -> None:
    rec = stack.emulator.add_recording(size=80_000)
    signer = stack.signer
    first = signer.recording_saved_body(rec, event_id=f"r15-{rec.id}")
    around = [
        signer.recording_saved_body(rec, event_type="call.hangup"),
        first,
        first,  # the same delivery again
        signer.recording_saved_body(rec, event_type="call.recording.error"),
        signer.recording_saved_body(rec, attempt=2),  # redelivered under a new event id
    ]
    assert [stack.send(body).status_code for body in around] == [200] * len(around)

    trec = races.twilio.add_recording(size=50_000)
    statuses = ["completed", "in-progress", "absent", "completed"]
    assert [races.twilio_callback(trec, status=s).status_code for s in statuses] == [200] * 4

    row = stack.wait_final(rec.id)
    trow = stack.wait_final(trec.sid)
    assert (row.state, trow.state) == ("stored", "stored"), (row.last_error, trow.last_error)
    # Late arrivals after the recording is stored.
    late = [
        signer.recording_saved_body(rec, attempt=3),
        signer.recording_saved_body(rec, event_type="call.hangup"),
    ]
    assert [stack.send(body).status_code for body in late] == [200, 200]
    assert [races.twilio_callback(trec, status=s).status_code for s in statuses[1:3]] == [200] * 2
    request_poll(stack)
    wait_for_next_poll(stack)  # time for anything wrongly published to run; polls relist both
    for key, stored in ((rec.id, row), (trec.sid, trow)):
        history = states_of(stack, key)
        assert history[-1] == State.STORED and history.count(State.STORED) == 1, history
        again = stack.row(key)
        assert again is not None and (again.state, again.attempts) == ("stored", stored.attempts)
    assert [r.recording_key for r in stack.rows()].count(trec.sid) == 1
    tally_of(stack, [rec]).assert_clean()
    sent = {trec.sid: trec.audio().sha256()}
    twilio_result = tally(stack.sessions, stack.storage, sent)
    twilio_result.assert_clean()
    assert twilio_result.stored == 1
    twilio_key = recording_key("twilio", "default", trec.sid, "wav")
    assert stack.stored_bytes_sha256(twilio_key) == trec.audio().sha256()
