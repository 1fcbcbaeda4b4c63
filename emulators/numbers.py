"""The phone numbers the emulators put in payloads and API answers: fictional (NANP 555-01xx and
555 exchange ranges), E.164 where the provider sends E.164.

Distinctive on purpose: the fault suite's secrets/PII canary (R23, ``tests/faults/canary.py``)
fails a test when any of them reaches a log line or a Sentry event.
"""

from __future__ import annotations

__all__ = [
    "QUO_LINE",
    "QUO_PARTICIPANT",
    "TELNYX_FROM",
    "TELNYX_TO",
    "VOICEGENIE_PREFIX",
    "VOXO_DIALED",
]

TELNYX_FROM = "+15551230000"
TELNYX_TO = "+15557650000"
QUO_PARTICIPANT = "+18005550100"
QUO_LINE = "+18885550101"  # our own Quo line, the other end of every call
VOXO_DIALED = "8005550123"  # VOXO reports national digits, no "+1"
VOICEGENIE_PREFIX = "+15555550"  # + three random digits, 000-199
