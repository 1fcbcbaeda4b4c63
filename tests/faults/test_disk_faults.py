"""Disk storage failing under a capture (reliability.md §4 R24) on an embedded stack with beat:
the worker runs under ``RLIMIT_FSIZE`` (set before it execs, so every pool process has it: a
write past the limit fails with ``EFBIG``, as on a full disk), then a pool process is
SIGKILLed while it writes. Nothing may appear under a final key but a whole recording."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.disk import PARTIAL_DIR
from tests.e2e.stack import Stack, audio_key, start_stack
from tests.faults.provider_stack import clean_faults, logged_errors, tally_of
from tests.fixtures.callrec import ServiceProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FILE_SIZE_LIMIT = 3_000_000
SETTINGS = {
    "CALLREC_TASK_TIME_LIMIT_SECONDS": "4",
    "CALLREC_STUCK_AFTER_SECONDS": "5",  # a killed capture is re-driven 5 s after its claim
    "CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS": "10",
    "CALLREC_RETRY_BASE_SECONDS": "0.5",
    "CALLREC_RETRY_MAX_SECONDS": "2",
    "CALLREC_POLL_INTERVAL_SECONDS": "3600",  # beat for the sweeper; no polls needed
    "CALLREC_SHUTDOWN_GRACE_SECONDS": "0",
}


def _limit_file_size() -> None:
    """In the worker before exec: files may not grow past the limit (soft; hard unchanged)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, hard))


def pool_pids(worker: ServiceProcess) -> list[int]:
    """The worker's pool processes (children of its main process)."""
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def writer_of(worker: ServiceProcess, path: Path) -> int | None:
    """The pool process holding ``path`` open, if any."""
    for pid in pool_pids(worker):
        fds = Path(f"/proc/{pid}/fd")
        try:
            if any(os.path.realpath(fd) == str(path) for fd in fds.iterdir()):
                return pid
        except OSError:  # it exited meanwhile
            continue
    return None


@pytest.fixture(scope="module")
def disk_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("disk-faults"),
        beat=True,
        worker_preexec=_limit_file_size,
        **SETTINGS,
    )
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def stack(disk_stack: Stack) -> Iterator[Stack]:
    yield from clean_faults(disk_stack)


def partial_files(stack: Stack) -> list[Path]:
    folder = Path(stack.storage.root) / PARTIAL_DIR  # type: ignore[attr-defined]
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_r24_disk_full_writes_no_partial_object_then_stores_once_the_limit_is_lifted(
    stack: Stack,
) -> None:
    rec = stack.emulator.add_recording(size=FILE_SIZE_LIMIT + 2_000_000)
    stack.announce(rec)

    def refused() -> object:
        row = stack.row(rec.id)
        error = (row.last_error or "") if row else ""
        return row if row is not None and "File too large" in error else None

    row = wait_for(refused, 60, 0.1, "a write refused by the file size limit")
    assert row.state in ("retrying", "fetching"), row.state  # retried, not failed
    assert "storage unavailable" in row.last_error, row.last_error
    key = audio_key(rec)
    assert stack.storage.stat(key) is None  # nothing under the final name
    worker = stack.processes[0]
    for pid in [worker.pid, *pool_pids(worker)]:  # the disk has room again
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    stored = stack.wait_final(rec.id, timeout=60)
    assert stored.state == "stored" and stored.size_bytes == rec.size
    assert stack.stored_bytes_sha256(key) == rec.audio("mp3").sha256()
    tally_of(stack, [rec]).assert_clean()
    print(f"R24 disk full: stored after {stored.attempts} attempts")


def test_r24_pool_process_killed_mid_write_leaves_temp_files_only_then_stores_once(
    stack: Stack,
) -> None:
    rec = stack.emulator.add_recording(size=2_000_000)
    stack.emulator.inject("audio", "trickle", seconds=2.5)
    before = set(partial_files(stack))
    stack.announce(rec)

    def writing() -> list[Path]:
        return [p for p in partial_files(stack) if p not in before and p.stat().st_size > 0]

    (temp,) = wait_for(writing, 30, 0.05, "the capture to be writing its temp file")
    worker = stack.processes[0]
    writer = wait_for(lambda: writer_of(worker, temp), 10, 0.05, "the writing pool process")
    os.kill(writer, signal.SIGKILL)
    key = audio_key(rec)
    assert stack.storage.stat(key) is None  # the final name holds nothing
    left = [p for p in partial_files(stack) if p not in before]
    assert left and all(p.name.endswith(".tmp") for p in left)  # temp files only
    row = stack.wait_final(rec.id, timeout=60)
    assert row.state == "stored" and row.size_bytes == rec.size
    assert stack.stored_bytes_sha256(key) == rec.audio("mp3").sha256()
    tally_of(stack, [rec]).assert_clean()  # includes callrec verify's checks
    errors = [line for line in logged_errors(stack) if "exited with" not in line]
    print(
        f"R24 kill: the writing pool process killed mid-write, {len(left)} temp file(s) "
        f"left in {PARTIAL_DIR}/, stored after {row.attempts} attempts; "
        f"{len(errors)} other error lines"
    )
