"""The Twilio-shaped recording status callback, shared by Twilio and Telnyx TeXML.

Both POST ``application/x-www-form-urlencoded`` with ``AccountSid``, ``CallSid``,
``RecordingSid``, ``RecordingUrl``, ``RecordingStatus``, ``RecordingDuration``,
``RecordingChannels``… (providers.md §5.1 and §1.1c). What differs is the signature and the API
the recording is fetched from, so each provider verifies and fetches; this module only decodes
the form and maps the status:

==========================  ===============================================================
``RecordingStatus``          what the event does
==========================  ===============================================================
``completed``                a recording row to capture
``absent``, ``failed``       a recording row that ends ``failed`` with the ``ErrorCode``
                             (too short/silent: 16101/16102; encryption failures), so an
                             operator sees it instead of a silent drop
anything else                acknowledged and ignored (``in-progress`` is sent only when
                             asked for in ``recordingStatusCallbackEvent``)
==========================  ===============================================================

Neither provider stamps a callback with a delivery id or a timestamp, so deliveries are
deduplicated on ``RecordingSid`` + ``RecordingStatus`` (providers.md §0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from providers.base import RecordingRef, WebhookEvent
from providers.errors import PayloadInvalid, PermanentFailure
from providers.json_body import refuse_unstorable_text

__all__ = [
    "FORM_CONTENT_TYPE",
    "callback_event",
    "decode_form",
    "raise_reported_failure",
    "signed_params",
]

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
CAPTURE_STATUSES = frozenset({"completed"})
FAILED_STATUSES = frozenset({"absent", "failed"})
MAX_FIELDS = 200
MAX_VALUE = 512
# Callback fields kept as hints for the capture and the metadata record. Phone numbers (From,
# To, Caller, Called…) and URLs are never kept.
HINT_FIELDS = {
    "AccountSid": "account_sid",
    "RecordingStatus": "status",
    "ErrorCode": "error_code",
    "RecordingDuration": "duration",
    "RecordingChannels": "channels",
    "RecordingStartTime": "start_time",
    "RecordingSource": "source",
    "RecordingTrack": "track",
    "ConferenceSid": "conference_sid",
    "ConnectionId": "connection_id",
}
READ_FIELDS = frozenset({"RecordingSid", "CallSid", *HINT_FIELDS})


def signed_params(body: bytes) -> list[tuple[str, str]]:
    """The form parameters as a web framework hands them to a validator (lenient, like
    werkzeug's form parser): used only to recompute a signature, never to read values."""
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def decode_form(body: bytes) -> dict[str, str]:
    """Strictly decode a form body: bad UTF-8, a NUL, a stray token or a field we read given
    twice with different values is a 400 (other repeated fields are left alone)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except UnicodeDecodeError:
        raise PayloadInvalid("body is not UTF-8") from None
    except ValueError:
        raise PayloadInvalid("body is not a valid form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        refuse_unstorable_text(name)
        refuse_unstorable_text(value)
        if name in READ_FIELDS and form.get(name, value) != value:
            raise PayloadInvalid(f"{name} is given twice with different values")
        form.setdefault(name, value)
    return form


def _field(form: Mapping[str, str], name: str, *, required: bool = False) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise PayloadInvalid(f"{name} is required")
        return None
    if len(value) > MAX_VALUE:
        raise PayloadInvalid(f"{name} is longer than {MAX_VALUE} characters")
    return value


def callback_event(form: Mapping[str, str], delivery_prefix: str = "") -> WebhookEvent:
    """The event a decoded callback stands for (see the table above)."""
    recording_sid = _field(form, "RecordingSid", required=True)
    status = (_field(form, "RecordingStatus", required=True) or "").lower()
    delivery_id = f"{delivery_prefix}{recording_sid}:{status}"
    event_type = f"recording.{status[:64]}"
    if status not in CAPTURE_STATUSES | FAILED_STATUSES:
        return WebhookEvent(delivery_id=delivery_id, event_type=event_type)
    hints: dict[str, Any] = {
        key: value for name, key in HINT_FIELDS.items() if (value := _field(form, name)) is not None
    }
    hints["status"] = status
    ref = RecordingRef(recording_id=recording_sid, call_id=_field(form, "CallSid"), hints=hints)
    return WebhookEvent(delivery_id=delivery_id, event_type=event_type, recordings=(ref,))


def raise_reported_failure(hints: Mapping[str, Any], provider: str) -> None:
    """``PermanentFailure`` for a row created from an ``absent``/``failed`` callback.

    The signed callback is the provider's final word on such a recording (it has no media), so
    the worker records the reason without asking the API.
    """
    status = hints.get("status")
    if status in FAILED_STATUSES:
        code = hints.get("error_code") or "none given"
        raise PermanentFailure(
            f"{provider} reported the recording {status} (ErrorCode {code})", "unavailable"
        )
