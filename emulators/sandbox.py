"""An isolated callrec configuration in one folder, for tests, benchmarks and demos.

Embedded mode (SQLite ledger and broker, disk storage) under ``folder``, a unique queue prefix,
and timings short enough for a test run; ``overrides`` replace any ``CALLREC_*`` value.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["sandbox_env", "wait_until"]

T = TypeVar("T")


def sandbox_env(folder: Path, **overrides: str) -> dict[str, str]:
    env = {
        "CALLREC_DATABASE_URL": f"sqlite:///{folder}/ledger.sqlite",
        "CALLREC_BROKER_URL": f"sqla+sqlite:///{folder}/broker.sqlite",
        "CALLREC_STORAGE_URL": f"file://{folder}/recordings",
        "CALLREC_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "CALLREC_LOG_FORMAT": "json",
        "CALLREC_LOG_LEVEL": "info",
        "CALLREC_SWEEP_INTERVAL_SECONDS": "1",
        "CALLREC_TASK_TIME_LIMIT_SECONDS": "20",
        "CALLREC_STUCK_AFTER_SECONDS": "25",
        "CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS": "30",
        "CALLREC_RETRY_BASE_SECONDS": "0.2",
        "CALLREC_RETRY_MAX_SECONDS": "3",
        "CALLREC_HTTP_TIMEOUT_SECONDS": "5",
    }
    env.update(overrides)
    return env


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
