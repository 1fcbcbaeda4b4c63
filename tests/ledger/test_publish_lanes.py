"""Every publish routes a row by its lane, read from the ledger: a backfill's rows (and the
rows their lookups resolve into) go to the backfill lane, whoever publishes them (relay,
sweeper, retry, re-drive); everything else goes fresh."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ledger import accept_refs, make_session_factory
from ledger.models import Source
from ledger.publish import Lane, backfill_rows, publish_and_record
from providers.base import RecordingRef


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def _row(sessions: sessionmaker[Session], key: str, source: str, parent: int | None = None) -> int:
    ref = RecordingRef(key)
    (row_id,) = accept_refs(
        sessions, "telnyx", "default", [ref], source=source, parent_id=parent
    ).new_ids
    return row_id


def test_rows_are_published_on_the_lane_of_their_source(sessions: sessionmaker[Session]) -> None:
    webhook = _row(sessions, "w", Source.WEBHOOK)
    poll = _row(sessions, "p", Source.POLL)
    backfill = _row(sessions, "b", Source.BACKFILL)
    backfill_child = _row(sessions, "bc", Source.LOOKUP, parent=backfill)
    webhook_child = _row(sessions, "wc", Source.LOOKUP, parent=webhook)
    ids = [webhook, poll, backfill, backfill_child, webhook_child]
    assert backfill_rows(sessions, ids) == {backfill, backfill_child}

    sent: list[tuple[int, Lane]] = []
    published = publish_and_record(lambda rid, _c, lane: sent.append((rid, lane)), sessions, ids)
    assert published == ids
    assert dict(sent) == {
        webhook: "fresh",
        poll: "fresh",  # VOXO and VoiceGenie have no webhooks: a poll's rows are fresh ones
        backfill: "backfill",
        backfill_child: "backfill",
        webhook_child: "fresh",
    }
    assert backfill_rows(sessions, []) == set()
