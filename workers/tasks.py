"""Thin Celery tasks: they take ledger ids (or an account) and hand over to ``capture``,
``sweep`` and ``reconcile``."""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from celery import Task
from celery.signals import worker_process_init, worker_ready

from config.logging import log_context
from config.metrics import start_worker_exporter
from ledger.publish import Lane
from workers.celery_app import app, settings
from workers.celery_config import capture_queue_of, poll_queue
from workers.queue_depths import capture_queue_depths
from workers.runtime import Runtime, build_runtime
from workers.shutdown import capturing, connect_signals
from workers.sqla_broker import batch_sender

__all__ = ["capture_task", "get_runtime", "poll_task", "schedule_polls_task", "sweep_task"]

logger = logging.getLogger(__name__)

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
connect_signals(settings)  # graceful shutdown: captures finish or are released (shutdown.py)


def _send_capture(
    recording_id: int, countdown: float | None, lane: Lane, producer: Any = None
) -> None:
    """One capture wake-up. With ``producer`` (a ``_capture_batch``, which declared both
    capture queues) the queue is not declared again per message; ``argsrepr`` is what Celery
    would compute with ``saferepr``, for less CPU (the relay sends one per webhook)."""
    capture_task.apply_async(
        args=[recording_id],
        countdown=countdown,
        queue=capture_queue_of(settings, lane),
        producer=producer,
        declare=[] if producer is not None else None,
        argsrepr=f"[{recording_id}]",
        kwargsrepr="{}",
    )


#: Many wake-ups through one producer (one broker transaction on the embedded broker).
_capture_batch = functools.partial(
    batch_sender,
    app,
    _send_capture,
    (capture_queue_of(settings, "fresh"), capture_queue_of(settings, "backfill")),
)


def _send_poll(provider: str, account: str) -> None:
    poll_task.apply_async(args=[provider, account], queue=poll_queue(settings))


def get_runtime() -> Runtime:
    """This process's runtime, built on first use (after the prefork fork)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = build_runtime(
                settings,
                _send_capture,
                _capture_batch,
                functools.partial(capture_queue_depths, app, settings),
            )
        return _runtime


@worker_process_init.connect
def _forget_parent_runtime(**_: Any) -> None:
    global _runtime
    _runtime = None


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """The worker's own /metrics on loopback, when CALLREC_WORKER_METRICS_PORT is set."""
    try:
        if start_worker_exporter(settings) is not None:
            logger.info("worker metrics on 127.0.0.1:%s", settings.worker_metrics_port)
    except OSError as exc:  # the port is taken: the worker still captures
        logger.warning("worker metrics exporter not started (%s)", exc)


class CallrecTask(Task):
    """Binds the task name and id to every log line the task emits."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with log_context(task=self.name, task_id=self.request.id):
            return super().__call__(*args, **kwargs)


@app.task(name="callrec.capture", base=CallrecTask)
def capture_task(recording_id: int) -> str:
    from workers.capture import capture

    with capturing():
        return capture(get_runtime(), int(recording_id)).state


@app.task(name="callrec.sweep", base=CallrecTask)
def sweep_task() -> int:
    from workers.sweep import sweep

    return sweep(get_runtime())


@app.task(name="callrec.schedule_polls", base=CallrecTask)
def schedule_polls_task() -> int:
    from workers.reconcile import schedule_polls

    return schedule_polls(get_runtime(), _send_poll)


@app.task(name="callrec.poll", base=CallrecTask)
def poll_task(provider: str, account: str) -> str:
    from workers.reconcile import poll_account

    return poll_account(get_runtime(), str(provider), str(account)).status
