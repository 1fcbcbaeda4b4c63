"""An isolated callrec configuration in one folder, for tests, benchmarks and demos.

Embedded mode (SQLite ledger and broker, disk storage) under ``folder``, a unique queue prefix,
and timings short enough for a test run; ``overrides`` replace any ``CALLREC_*`` value.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

__all__ = ["ManagedProcess", "fresh_postgres_database", "sandbox_env", "wait_until"]

T = TypeVar("T")


def sandbox_env(folder: Path, **overrides: str) -> dict[str, str]:
    env = {
        "CALLREC_DATABASE_URL": f"sqlite:///{folder}/ledger.sqlite",
        "CALLREC_BROKER_URL": f"sqla+sqlite:///{folder}/broker.sqlite",
        "CALLREC_STORAGE_URL": f"file://{folder}/recordings",
        "CALLREC_METRICS_DIR": f"{folder}/metrics",
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


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str, prefix: str = "callrec_t_") -> Iterator[str]:
    """Create an empty database through ``admin_url``, yield its URL, drop it afterwards."""
    from sqlalchemy import create_engine

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield f"{admin_url.rpartition('/')[0]}/{name}"
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


class ManagedProcess:
    """A child in its own process group, output to a log file; ``stop()`` ends the group."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        name: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """``preexec_fn`` runs in the child before it execs (e.g. to set a resource limit)."""
        self.name = name or Path(argv[0]).name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process group (ignored once it has exited)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stray children
            os.killpg(self.process.pid, signal.SIGKILL)
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
