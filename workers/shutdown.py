"""Graceful shutdown of capture workers: an in-flight capture finishes or is released at once.

Celery's warm shutdown (SIGTERM to the main process) stops consuming and waits for running
tasks; with ``acks_late`` their messages are acknowledged only when they return. Left alone a
capture would run on up to the task time limit, and a worker killed meanwhile (the container
runtime's stop timeout) would leave its ledger claim to expire after
``CALLREC_STUCK_AFTER_SECONDS``. Pool processes also get a SIGTERM of their own when the whole
process group is signalled (honcho, systemd), which by default kills them mid-download.

So, in every prefork pool process, SIGTERM raises :class:`ShuttingDown` inside the download
and storage write of a capture (the only long part; never inside a ledger transition): the
capture releases its claim without counting the attempt (``claims.defer`` to now) and
republishes the row, so another worker retries it at once; the conditional storage write and
the multipart abort make sure nothing partial stays. A SIGTERM that arrives outside that region
lets the capture finish (its next download would not start); an idle pool process exits as it
did before (billiard's handler is back in place between tasks). In the main process, the warm
shutdown gives running captures ``CALLREC_SHUTDOWN_GRACE_SECONDS`` to finish, then sends
SIGTERM to the pool processes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

from celery.signals import worker_process_init, worker_shutting_down

from config.settings import Settings

__all__ = ["ShuttingDown", "connect_signals", "interruptible"]

logger = logging.getLogger(__name__)


class ShuttingDown(BaseException):  # not an error: the process is told to stop
    """Raised in a capture's download when its worker process receives SIGTERM.

    A BaseException, so that no ``except Exception`` on the way turns it into a retry.
    """


_interruptible = False
_pending = False
_in_pool_process = False


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    global _pending
    _pending = True
    if _interruptible:
        raise ShuttingDown("worker shutting down")
    # Otherwise the capture finishes its ledger transition, and no new download starts.


@contextmanager
def capturing() -> Iterator[None]:
    """Around one capture task in a pool process: SIGTERM is ours, not billiard's (which
    exits the process at once), until the task returns. Elsewhere (solo pool, threads, tests)
    the main process's own handlers stay in place."""
    global _pending
    if not _in_pool_process or threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending = False
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interruptible() -> Iterator[None]:
    """The region where SIGTERM raises ``ShuttingDown`` (a download and its storage write)."""
    global _interruptible
    if _pending:
        raise ShuttingDown("worker shutting down")
    _interruptible = True
    try:
        yield
    finally:
        _interruptible = False


def _mark_pool_process(**_: Any) -> None:
    global _in_pool_process
    _in_pool_process = True


def _stop_pool_after(grace: float) -> None:
    def stop() -> None:
        import billiard.process

        children = billiard.process.active_children()
        if children:
            logger.warning("captures still running %.0fs into the shutdown: releasing them", grace)
        for child in children:
            if child.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    timer = threading.Timer(grace, stop)
    timer.daemon = True
    timer.start()


def connect_signals(settings: Settings) -> None:
    """Mark pool processes (``capturing`` takes SIGTERM there) and arm the main process's
    grace timer on a warm shutdown."""
    grace = float(settings.shutdown_grace_seconds)
    worker_process_init.connect(_mark_pool_process, weak=False)
    worker_shutting_down.connect(lambda **_: _stop_pool_after(grace), weak=False)
