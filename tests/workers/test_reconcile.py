"""The reconciler in-process (no Celery) against the emulators over real HTTP: windows,
watermark, pagination edges, the poll lease, the schedule, broken accounts, the 429 pause."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from emulators.quo import QuoEmulator
from emulators.telnyx import TelnyxEmulator
from emulators.twilio import TwilioEmulator
from ledger import Recording, accept_refs, migrate
from ledger.account_state import acquire_lease, pause, paused_until, poll_state
from ledger.models import utcnow
from providers.base import RecordingRef
from tests.fixtures.callrec import base_env, settings_from
from workers.capture import capture
from workers.reconcile import poll_account, poll_window, schedule_polls
from workers.runtime import Runtime, build_runtime

Sent = list[tuple[int, float | None]]


@pytest.fixture
def sent() -> Sent:
    return []


@pytest.fixture
def new_runtime(tmp_path: Path, sent: Sent) -> Iterator[Callable[..., Runtime]]:
    """Runtimes on one ledger (``tmp_path``) with setting overrides; all closed afterwards."""
    built: list[Runtime] = []

    def build(**overrides: str) -> Runtime:
        settings = settings_from(base_env(tmp_path, **overrides))
        migrate(settings.database_url)
        runtime = build_runtime(
            settings, lambda rid, countdown, _lane: sent.append((rid, countdown))
        )
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


def telnyx_env(emulator: TelnyxEmulator) -> dict[str, str]:
    return {
        "CALLREC_TELNYX_API_KEY": emulator.api_key,
        "CALLREC_TELNYX_API_BASE": emulator.base_url,
        "CALLREC_TELNYX_AUDIO_HOSTS": emulator.audio_host,
    }


@pytest.fixture
def runtime(new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator) -> Runtime:
    return new_runtime(**telnyx_env(telnyx_emulator))


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def keys(runtime: Runtime, account: str = "default") -> list[str]:
    with runtime.sessions() as session:
        return sorted(
            session.execute(
                select(Recording.recording_key).where(Recording.account == account)
            ).scalars()
        )


def list_requests(emulator: TelnyxEmulator) -> int:
    return sum(1 for r in emulator.requests if r.path == "/v2/recordings")


def test_window_first_poll_looks_back_then_overlaps_the_watermark() -> None:
    settings = settings_from(
        {"CALLREC_POLL_LOOKBACK_SECONDS": "3600", "CALLREC_POLL_OVERLAP_SECONDS": "120"}
    )
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert poll_window(None, now, settings) == (now - timedelta(hours=1), now)
    mark = now - timedelta(minutes=5)
    assert poll_window(mark, now, settings) == (mark - timedelta(minutes=2), now)
    behind = now - timedelta(days=30)  # far behind: one day per poll, always forward
    since, until = poll_window(behind, now, settings)
    assert (since, until) == (behind - timedelta(minutes=2), behind + timedelta(days=1, minutes=-2))
    assert until > behind


def test_first_poll_lists_the_lookback_and_sets_the_watermark(
    runtime: Runtime, telnyx_emulator: TelnyxEmulator, sent: Sent
) -> None:
    old = telnyx_emulator.add_recording(started_at=ago(days=2))
    recent = telnyx_emulator.add_recording(started_at=ago(hours=3))
    before = utcnow()
    outcome = poll_account(runtime, "telnyx", "default")
    assert outcome.status == "polled" and outcome.progress is not None
    assert (outcome.progress.pages, outcome.progress.found, outcome.progress.new) == (1, 1, 1)
    assert keys(runtime) == [recent.id] and old.id not in keys(runtime)
    state = poll_state(runtime.sessions, "telnyx", "default")
    assert state is not None and state.watermark is not None and state.watermark >= before
    assert (state.last_found, state.last_new, state.last_error) == (1, 1, None)
    assert len(sent) == 1  # the new row was published for capture
    with runtime.sessions() as session:
        assert session.execute(select(Recording.source)).scalar_one() == "poll"


def test_next_poll_rereads_the_overlap_and_never_touches_existing_rows(
    runtime: Runtime, telnyx_emulator: TelnyxEmulator, sent: Sent
) -> None:
    known = telnyx_emulator.add_recording(started_at=ago(hours=1))
    accept_refs(runtime.sessions, "telnyx", "default", [RecordingRef(known.id)], source="webhook")
    assert poll_account(runtime, "telnyx", "default").status == "polled"
    mark = poll_state(runtime.sessions, "telnyx", "default").watermark  # type: ignore[union-attr]
    assert mark is not None
    # Listed late, created before the watermark: inside the overlap (300 s) it is found, an
    # older one is not (it was the first poll's job).
    late = telnyx_emulator.add_recording(
        started_at=mark - timedelta(seconds=200), duration_millis=0
    )
    too_old = telnyx_emulator.add_recording(
        started_at=mark - timedelta(seconds=400), duration_millis=0
    )
    second = poll_account(runtime, "telnyx", "default")
    assert second.progress is not None
    assert second.progress.since == mark - timedelta(seconds=300)
    assert (second.progress.found, second.progress.new) == (1, 1)
    assert late.id in keys(runtime) and too_old.id not in keys(runtime)
    with runtime.sessions() as session:
        row = session.execute(select(Recording).where(Recording.recording_key == known.id)).one()
    assert row[0].source == "webhook"  # the poll never rewrote the webhook's row
    later = poll_state(runtime.sessions, "telnyx", "default")
    assert later is not None and later.watermark is not None and later.watermark > mark


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (250, 1), (500, 2), (251, 2)])
def test_telnyx_pagination_edges(
    runtime: Runtime, telnyx_emulator: TelnyxEmulator, count: int, pages: int
) -> None:
    for n in range(count):
        telnyx_emulator.add_recording(size=1000, started_at=ago(minutes=10, seconds=n))
    outcome = poll_account(runtime, "telnyx", "default")
    assert outcome.progress is not None
    assert (outcome.progress.pages, outcome.progress.found) == (pages, count)
    assert list_requests(telnyx_emulator) == pages  # no request past the last page
    assert len(keys(runtime)) == count


def test_a_failing_page_keeps_the_window_and_the_next_poll_finishes_it(
    runtime: Runtime, telnyx_emulator: TelnyxEmulator
) -> None:
    recs = [
        telnyx_emulator.add_recording(size=1000, started_at=ago(minutes=10, seconds=n))
        for n in range(300)
    ]
    telnyx_emulator.inject("api", "slow", seconds=0.0)  # page 1 answers...
    telnyx_emulator.inject("api", "503")  # ...page 2 fails
    failed = poll_account(runtime, "telnyx", "default")
    assert failed.status == "failed" and failed.detail is not None and "503" in failed.detail
    state = poll_state(runtime.sessions, "telnyx", "default")
    assert state is not None and state.watermark is None  # the window is not lost
    assert state.last_error is not None and "503" in state.last_error
    assert len(keys(runtime)) == 250  # page 1 is committed
    again = poll_account(runtime, "telnyx", "default")
    assert again.status == "polled" and again.progress is not None
    assert (again.progress.found, again.progress.new) == (300, 50)
    assert keys(runtime) == sorted(rec.id for rec in recs)
    state = poll_state(runtime.sessions, "telnyx", "default")
    assert state is not None and state.watermark is not None and state.last_error is None


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (1000, 1), (1001, 2)])
def test_twilio_pagination_edges(
    new_runtime: Callable[..., Runtime], count: int, pages: int
) -> None:
    with TwilioEmulator() as twilio:
        for n in range(count):
            twilio.add_recording(size=100, date_created=ago(minutes=30, seconds=n))
        runtime = new_runtime(**twilio.settings_env())
        outcome = poll_account(runtime, "twilio", "default")
        assert outcome.progress is not None, outcome
        assert (outcome.progress.pages, outcome.progress.found) == (pages, count)
        assert len(keys(runtime)) == count
        lists = [r for r in twilio.requests if r.path.endswith("/Recordings.json")]
        assert len(lists) == pages


def test_two_accounts_one_with_broken_credentials(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator, tmp_path: Path
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        "".join(
            f"[[accounts]]\nprovider = 'telnyx'\nname = '{name}'\n"
            f"api_base = '{telnyx_emulator.base_url}'\n"
            f"audio_hosts = ['{telnyx_emulator.audio_host}']\n"
            f"credentials = {{ api_key = '{key}' }}\n"
            for name, key in (("good", telnyx_emulator.api_key), ("broken", "not-the-key"))
        )
    )
    runtime = new_runtime(CALLREC_ACCOUNTS_FILE=str(accounts))
    rec = telnyx_emulator.add_recording(size=2000, started_at=ago(minutes=5))
    broken = poll_account(runtime, "telnyx", "broken")
    good = poll_account(runtime, "telnyx", "good")
    assert good.status == "polled" and keys(runtime, "good") == [rec.id]
    assert broken.status == "failed" and keys(runtime, "broken") == []
    state = poll_state(runtime.sessions, "telnyx", "broken")
    assert state is not None and state.watermark is None
    assert state.last_error == "API refused the credentials (HTTP 401 401 Unauthorized)"
    # The good account's capture goes through; the broken one never stopped it.
    with runtime.sessions() as session:
        row_id = session.execute(
            select(Recording.id).where(Recording.account == "good")
        ).scalar_one()
    assert capture(runtime, row_id).state == "stored"


def test_one_poll_per_account_at_a_time(runtime: Runtime, telnyx_emulator: TelnyxEmulator) -> None:
    telnyx_emulator.add_recording()
    held = acquire_lease(runtime.sessions, "telnyx", "default", timedelta(seconds=60))
    assert held is not None
    assert poll_account(runtime, "telnyx", "default").status == "busy"
    assert list_requests(telnyx_emulator) == 0
    expired = acquire_lease(runtime.sessions, "telnyx", "other", timedelta(seconds=-1))
    assert expired is not None  # a lease in the past is free for the next poll
    assert acquire_lease(runtime.sessions, "telnyx", "other", timedelta(seconds=60)) is not None


def test_schedule_enqueues_each_due_account_once_per_interval(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator
) -> None:
    first = new_runtime(**telnyx_env(telnyx_emulator))
    second = new_runtime(**telnyx_env(telnyx_emulator))  # another beat/worker, same ledger
    polls: list[tuple[str, str]] = []
    assert schedule_polls(first, lambda p, a: polls.append((p, a))) == 1
    assert schedule_polls(second, lambda p, a: polls.append((p, a))) == 0
    assert polls == [("telnyx", "default")]  # quo/twilio have no credentials: not polled


def test_a_rate_limit_pauses_polls_and_captures_of_the_account_everywhere(
    new_runtime: Callable[..., Runtime], telnyx_emulator: TelnyxEmulator, sent: Sent
) -> None:
    poller = new_runtime(**telnyx_env(telnyx_emulator))
    capturer = new_runtime(**telnyx_env(telnyx_emulator))  # another process's runtime
    rec = telnyx_emulator.add_recording()
    row_id = accept_refs(
        capturer.sessions, "telnyx", "default", [RecordingRef(rec.id)], source="webhook"
    ).new_ids[0]
    telnyx_emulator.inject("api", "429", retry_after=30)
    limited = poll_account(poller, "telnyx", "default")
    assert limited.status == "failed" and limited.detail is not None and "429" in limited.detail
    until = paused_until(capturer.sessions, "telnyx", "default")
    assert until is not None and 25 < (until - utcnow()).total_seconds() <= 30
    telnyx_emulator.clear_requests()
    outcome = capture(capturer, row_id)  # no API call while paused: rescheduled instead
    assert outcome.state == "retrying" and outcome.retry_in is not None
    assert 0 < outcome.retry_in <= float(capturer.settings.retry_max_seconds)
    assert poll_account(poller, "telnyx", "default").status == "paused"
    assert telnyx_emulator.requests == []
    with capturer.sessions() as session:
        row = session.get(Recording, row_id)
        assert row is not None and row.attempts == 0  # deferring costs no attempt
    assert sent[-1] == (row_id, outcome.retry_in)
    # The pause only ever grows; once over, capture proceeds.
    past = utcnow() - timedelta(seconds=1)
    assert not pause(capturer.sessions, "telnyx", "default", past, "shorter")


def test_a_quo_account_is_polled_into_call_lookups(
    new_runtime: Callable[..., Runtime],
) -> None:
    """Quo lists calls, not recordings: a poll inserts one call.completed lookup per call."""
    with QuoEmulator(rate_limit=None) as quo:
        call = quo.add_call(segments=2)
        runtime = new_runtime(CALLREC_QUO_API_KEY=quo.api_key, CALLREC_QUO_API_BASE=quo.base_url)
        polls: list[tuple[str, str]] = []
        assert schedule_polls(runtime, lambda p, a: polls.append((p, a))) == 1
        assert polls == [("quo", "default")]
        outcome = poll_account(runtime, *polls[0])
        assert outcome.status == "polled" and outcome.progress is not None
        assert (outcome.progress.found, outcome.progress.new) == (1, 1)
    assert keys(runtime) == [f"lookup:call_id={call.id}&event=call.completed"]
    state = poll_state(runtime.sessions, "quo", "default")
    assert state is not None and state.watermark is not None and state.last_error is None
    assert poll_account(runtime, "quo", "nope").status == "unknown"
