"""The list-only providers (VOXO, VoiceGenie) through the reconciler: a poll inserts their
recordings as ``poll`` rows, a second poll inserts nothing, and the rows capture byte-exact."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from emulators.base import Emulator
from emulators.voicegenie import VoiceGenieEmulator
from emulators.voxo import VoxoEmulator
from ledger import Recording, State, migrate
from storage import recording_key
from tests.fixtures.callrec import base_env, settings_from
from workers.capture import capture
from workers.reconcile import poll_account
from workers.runtime import Runtime, build_runtime


@dataclass
class Polled:
    """One list-only provider's emulator with three recordings, and its settings."""

    provider: str
    emulator: Emulator
    env: dict[str, str]
    ids: list[str]
    sha256: dict[str, str]


def _voxo(stack: ExitStack) -> Polled:
    emulator = stack.enter_context(VoxoEmulator())
    # One recorded call per day for three days: the window spans more than VOXO's 2-day limit.
    now = datetime.now(UTC)
    recordings = [emulator.add_recording(now - timedelta(hours=2 + 24 * day)) for day in range(3)]
    emulator.add_recording(now - timedelta(hours=5), recorded=0)  # not recorded: never listed
    env = emulator.settings_env()
    ids = [rec.unique_id for rec in recordings]
    return Polled("voxo", emulator, env, ids, {r.unique_id: r.audio().sha256() for r in recordings})


def _voicegenie(stack: ExitStack) -> Polled:
    emulator = stack.enter_context(VoiceGenieEmulator())
    now = datetime.now(UTC)
    recordings = [emulator.add_recording(created_at=now - timedelta(hours=h)) for h in (1, 2, 30)]
    env = emulator.settings_env()
    ids = [rec.call_uuid for rec in recordings]
    return Polled(
        "voicegenie", emulator, env, ids, {r.call_uuid: r.audio().sha256() for r in recordings}
    )


MAKERS: dict[str, Callable[[ExitStack], Polled]] = {"voxo": _voxo, "voicegenie": _voicegenie}


@pytest.fixture(params=sorted(MAKERS))
def polled(request: pytest.FixtureRequest) -> Iterator[Polled]:
    with ExitStack() as stack:
        yield MAKERS[request.param](stack)


@pytest.fixture
def runtime(tmp_path: Path, polled: Polled) -> Iterator[Runtime]:
    settings = settings_from(
        base_env(tmp_path, CALLREC_POLL_LOOKBACK_SECONDS=str(3 * 86400), **polled.env)
    )
    migrate(settings.database_url)
    runtime = build_runtime(settings, lambda _id, _countdown, _lane: None)
    yield runtime
    runtime.close()


def rows(runtime: Runtime, provider: str) -> list[Recording]:
    with runtime.sessions() as session:
        return list(
            session.execute(select(Recording).where(Recording.provider == provider)).scalars()
        )


def test_a_poll_inserts_every_listed_recording_once_and_they_capture(
    runtime: Runtime, polled: Polled
) -> None:
    # A poll lists at most one day: from the 3-day lookback, three polls catch up to now.
    for _ in range(3):
        outcome = poll_account(runtime, polled.provider, "default")
        assert outcome.status == "polled", outcome
    found = rows(runtime, polled.provider)
    assert sorted(r.recording_key for r in found) == sorted(polled.ids)
    assert {r.source for r in found} == {"poll"}

    again = poll_account(runtime, polled.provider, "default")
    assert again.status == "polled" and again.progress is not None
    assert again.progress.new == 0
    assert len(rows(runtime, polled.provider)) == len(polled.ids)

    for row in found:
        assert capture(runtime, row.id).state == State.STORED
    for row in rows(runtime, polled.provider):
        assert row.state == State.STORED
        assert row.sha256 == polled.sha256[row.recording_key]
        key = row.storage_key
        assert key == recording_key(polled.provider, "default", row.recording_key, "mp3")
        digest = hashlib.sha256(b"".join(runtime.storage.read(key))).hexdigest()
        assert digest == row.sha256
