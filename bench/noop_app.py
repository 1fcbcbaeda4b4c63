"""The Celery baseline of ``bench/end_to_end.py``: callrec's own Celery configuration with a
no-op task in place of the capture task.

``celery -A bench.noop_app worker …`` runs with the settings of the environment, exactly as
``workers.celery_app`` does (``make_celery``: broker, transport options, acks late, prefetch,
queues and routes), but imports none of callrec's tasks. ``bench.noop`` goes to the capture
queue and only appends its completion time to ``BENCH_NOOP_TALLY`` (one short ``write`` to an
``O_APPEND`` file per task), so the bench can tell when the last one ran and how fast they went.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from config.settings import Settings, load_settings
from workers.celery_config import capture_queue, make_celery

__all__ = ["NOOP_TASK", "TALLY_ENV", "app", "make_noop_app", "publish_noops", "read_tally"]

NOOP_TASK = "bench.noop"
TALLY_ENV = "BENCH_NOOP_TALLY"

_tally: tuple[int, int] | None = None  # (pid, fd): reopened after a prefork fork


def _tally_fd() -> int:
    global _tally
    if _tally is None or _tally[0] != os.getpid():
        fd = os.open(os.environ[TALLY_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _tally = (os.getpid(), fd)
    return _tally[1]


def make_noop_app(settings: Settings) -> Celery:
    """callrec's Celery app for ``settings``, without callrec's tasks, plus ``bench.noop``."""
    celery = make_celery(settings)
    celery.conf.update(include=[], beat_schedule={})
    celery.conf.task_routes = {NOOP_TASK: {"queue": capture_queue(settings)}}

    @celery.task(name=NOOP_TASK)
    def noop(index: int) -> None:
        os.write(_tally_fd(), f"{time.time():.6f}\n".encode())

    return celery


def publish_noops(celery: Celery, count: int) -> None:
    """Publish ``count`` no-op tasks on one producer (the index keeps messages distinct)."""
    with celery.producer_or_acquire() as producer:
        for index in range(count):
            celery.send_task(NOOP_TASK, args=[index], producer=producer)


def read_tally(path: str) -> list[float]:
    """The completion times (Unix s) the no-op tasks wrote so far."""
    try:
        with open(path, encoding="ascii") as tally:
            return [float(line) for line in tally.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


#: What ``celery -A bench.noop_app`` runs (None when merely imported by the bench itself).
app: Celery | None = make_noop_app(load_settings()) if os.environ.get(TALLY_ENV) else None
