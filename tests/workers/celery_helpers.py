"""What the broker tests share: a capture sender like the worker's own
(``workers.tasks._send_capture``) bound to an app (``app`` fixture: tests/workers/conftest.py)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from config.settings import Settings
from ledger.publish import Lane
from workers.celery_config import capture_queue_of


def send_capture(app: Celery, settings: Settings) -> Any:
    def send(
        recording_id: int, countdown: float | None, lane: Lane = "fresh", producer: Any = None
    ) -> None:
        app.send_task(
            "callrec.capture",
            args=[recording_id],
            countdown=countdown,
            queue=capture_queue_of(settings, lane),
            producer=producer,
            declare=[] if producer is not None else None,  # a batch_sender declared them
            argsrepr=f"[{recording_id}]",
            kwargsrepr="{}",
        )

    return send


def take_messages(app: Celery, queue: str, count: int) -> list[Any]:
    """Consume ``count`` messages from ``queue`` (5 s each at most), as a worker would see them."""
    with app.connection_for_read() as connection:
        consumer = connection.SimpleQueue(queue)
        try:
            return [consumer.get(timeout=5) for _ in range(count)]
        finally:
            consumer.close()


def capture_queues(settings: Settings) -> tuple[str, str]:
    """Both capture lanes' queues, as the worker's ``_capture_batch`` declares them."""
    return capture_queue_of(settings, "fresh"), capture_queue_of(settings, "backfill")
