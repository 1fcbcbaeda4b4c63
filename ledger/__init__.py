"""The ledger: one row per recording, the truth about what was accepted and what is stored."""

from ledger.accept import AcceptResult, accept_event, accept_refs
from ledger.claims import Claim, claim, finish, release_for_retry
from ledger.db import make_engine, make_session_factory, migrate
from ledger.models import FINAL_STATES, Delivery, Recording, RecordingEvent, State
from ledger.sweeper import mark_enqueued, rows_to_publish, unpublished_rows

__all__ = [
    "FINAL_STATES",
    "AcceptResult",
    "Claim",
    "Delivery",
    "Recording",
    "RecordingEvent",
    "State",
    "accept_event",
    "accept_refs",
    "claim",
    "finish",
    "make_engine",
    "make_session_factory",
    "mark_enqueued",
    "migrate",
    "release_for_retry",
    "rows_to_publish",
    "unpublished_rows",
]
