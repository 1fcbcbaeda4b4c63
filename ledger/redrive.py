"""Re-drive a failed recording: put it back to waiting, as if newly accepted, for another try.

The ledger decides, the broker only wakes workers: a re-driven row is waiting, due now and
unpublished (``enqueued_at`` cleared), so the relay publishes it within its interval and, without
a relay, the beat sweeper after its grace. Its attempts start again from zero, so it gets the
full ``CALLREC_MAX_ATTEMPTS``; ``last_error`` keeps the reason it had failed with until a new
attempt ends. One conditional UPDATE: re-driving twice, or a row that is not failed, changes
nothing. Every re-drive is an audit event in ``recording_events``.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import Recording, RecordingEvent, State, utcnow

__all__ = ["REDRIVEN_STATE", "redrive"]

#: The state a re-driven row waits in: attempts are reset, so it is as good as newly accepted.
REDRIVEN_STATE = State.ACCEPTED


def redrive(sessions: sessionmaker[Session], recording_id: int, *, reason: str) -> bool:
    """Put failed row ``recording_id`` back to waiting; False if it is not (or no longer) failed.

    ``reason`` (who asked, and why) goes into the audit event; keep it free of secrets.
    """
    now = utcnow()
    with sessions.begin() as session:
        changed = session.execute(  # type: ignore[attr-defined]
            update(Recording)
            .where(Recording.id == recording_id, Recording.state == State.FAILED)
            .values(
                state=REDRIVEN_STATE,
                attempts=0,
                next_attempt_at=now,
                enqueued_at=None,
                claimed_at=None,
                claim_token=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            return False
        session.add(
            RecordingEvent(
                recording_id=recording_id,
                at=now,
                state=REDRIVEN_STATE,
                attempt=0,
                detail=f"re-driven: {reason}",
            )
        )
        return True
