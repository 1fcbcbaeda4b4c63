"""Child-process entry points of ``bench/capture.py`` (one role per process, JSON on stdout).

``python bench/capture_child.py ROLE`` with ROLE one of:

* ``emulator --rec ID:BYTES ... [--mib-per-s R]`` — a ``TelnyxEmulator`` serving those
  recordings (each audio body paced at R MiB/s when given); prints
  ``{"base_url", "audio_host", "api_key", "recordings": {id: {"size", "sha256"}}}`` as one
  line, then serves until its stdin closes or it is signalled;
* ``moto`` — a moto S3 server on 127.0.0.1 (port 0); prints ``{"endpoint"}``, then the same;
* ``callrec`` — reads a job (JSON) on stdin, runs one ``capture()`` on a fresh ledger and prints
  the timing, CPU and memory figures;
* ``bare`` — reads a job on stdin, asks the API for a fresh URL and streams it to nowhere with
  bare httpx (same chunk size, no hashing, no storage): the baseline.

Each result is the last stdout line, prefixed with ``RESULT_PREFIX``. The children ask the
kernel to SIGTERM them if the benchmark dies, so nothing outlives it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH, so a scratch copy on PYTHONPATH wins

RESULT_PREFIX = "BENCH-RESULT "
_PR_SET_PDEATHSIG = 1

Job = Mapping[str, Any]


# -- process helpers ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask for SIGTERM when the parent exits (Linux; best effort elsewhere)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)


def _exit_on_term() -> None:
    """SIGTERM raises SystemExit, so ``finally`` blocks and context managers run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _status_kib(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM``-style field of /proc/self/status, in KiB (None off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _settle_allocator(job: Job) -> None:
    """Allocate and free one ``malloc_warmup`` block (0: skip) before the timed section.

    glibc serves blocks above its mmap threshold (128 KiB at start) with a fresh mmap, and
    raises the threshold only once such a block is freed. A fresh process streaming 256 KiB
    chunks then page-faults every chunk in (~34k faults and ~2x the time per 100 MiB here),
    while a process that has already freed a big block (the callrec child after its set-up,
    any long-running worker) does not. Doing this in both children compares code, not malloc
    state; it is a no-op for a process whose threshold is already raised.
    """
    size = int(job.get("malloc_warmup") or 0)
    if size:
        block = bytearray(size)
        del block


def _emit(result: Mapping[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _serve_until_stdin_closes(
    ready: Mapping[str, Any],
    stop: Callable[[], None],
    answer: Callable[[str], Mapping[str, Any]] | None = None,
) -> None:
    """Print the ready line, then block until the parent closes our stdin (or signals us).

    With ``answer``, each line read from stdin is a query whose answer is emitted as a result
    line (``bench/capture.py``'s ``Bench.query``).
    """
    try:
        _emit(ready)
        for line in sys.stdin:
            if answer is not None and line.strip():
                _emit(answer(line.strip()))
    finally:
        stop()


# -- servers --------------------------------------------------------------------------------------


def _pace_audio(mib_per_s: float) -> None:
    """Cap every audio body the emulator sends at ``mib_per_s`` (a provider's egress rate).

    Wraps the emulator module's ``_stream`` body generator; fails loudly if it is renamed.
    """
    import emulators.telnyx as telnyx

    unpaced = telnyx._stream
    rate = mib_per_s * 1024 * 1024

    def paced(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        started, sent = time.monotonic(), 0
        for chunk in unpaced(*args, **kwargs):
            sent += len(chunk)
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            yield chunk

    telnyx._stream = paced


def run_emulator(recs: list[str], mib_per_s: float) -> None:
    """Serve the given ``ID:BYTES`` recordings (mp3) from a TelnyxEmulator on loopback."""
    from emulators.telnyx import TelnyxEmulator

    if mib_per_s > 0:
        _pace_audio(mib_per_s)
    emulator = TelnyxEmulator(url_ttl_seconds=3600)
    described: dict[str, dict[str, Any]] = {}
    for spec in recs:
        rec_id, _, size = spec.rpartition(":")
        rec = emulator.add_recording(rec_id, size=int(size))
        described[rec_id] = {"size": int(size), "sha256": rec.audio("mp3").sha256()}
    emulator.start(keep_alive=keep_alive())
    ready = {
        "base_url": emulator.base_url,
        "audio_host": emulator.audio_host,
        "api_key": emulator.api_key,
        "recordings": described,
    }
    _serve_until_stdin_closes(ready, emulator.stop)


def keep_alive() -> bool:
    """Whether bench servers keep HTTP/1.1 connections open, as real providers and S3 do
    (``BENCH_KEEP_ALIVE=0``: werkzeug's ``Connection: close`` on every response)."""
    return os.environ.get("BENCH_KEEP_ALIVE", "1") != "0"


def run_moto() -> None:
    """A moto S3 server on 127.0.0.1 with fake credentials; objects live in this process."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from emulators.server import KeepAliveHandler

    class KeepAliveMoto(KeepAliveHandler, MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            return None

    class QuietMoto(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            return None

    app = DomainDispatcherApplication(create_backend_app)
    handler = KeepAliveMoto if keep_alive() else QuietMoto
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="moto")
    thread.start()
    host, port = server.server_address[:2]

    def stop() -> None:
        server.shutdown()
        thread.join(10)
        server.server_close()

    _serve_until_stdin_closes({"endpoint": f"http://{host}:{port}"}, stop)


# -- measured runs --------------------------------------------------------------------------------


def run_callrec(job: Job) -> dict[str, Any]:
    """One real ``capture()`` of ``job["recording_id"]`` into a fresh ledger and storage."""
    from sqlalchemy import select

    from config.settings import load_settings
    from ledger import Recording, accept_refs, migrate
    from providers.base import RecordingRef
    from storage import recording_key
    from workers.capture import capture
    from workers.runtime import build_runtime

    env: dict[str, str] = dict(job["env"])
    settings = load_settings(env)
    migrate(settings.database_url)
    runtime = build_runtime(settings, lambda *_args: None)
    try:
        accepted = accept_refs(
            runtime.sessions,
            "telnyx",
            "default",
            [RecordingRef(recording_id=job["recording_id"])],
            source="list",
        )
        row_id = accepted.new_ids[0]
        profiler = None
        if job.get("profile"):
            import cProfile

            profiler = cProfile.Profile()
        _settle_allocator(job)
        rss_before = _status_kib("VmRSS")
        hwm_before = _status_kib("VmHWM")
        cpu0 = _cpu_seconds()
        faults0 = _minor_faults()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        outcome = capture(runtime, row_id)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        cpu1 = _cpu_seconds()
        faults = _minor_faults() - faults0
        hwm_after = _status_kib("VmHWM")
        if profiler is not None:
            profiler.dump_stats(job["profile"])
        with runtime.sessions() as session:
            row = session.execute(select(Recording).where(Recording.id == row_id)).scalar_one()
        key = recording_key("telnyx", "default", job["recording_id"], "mp3")
        stat = runtime.storage.stat(key)
        return {
            "role": "callrec",
            "state": outcome.state,
            "detail": outcome.detail,
            "seconds": seconds,
            "bytes": row.size_bytes,
            "stored_bytes": None if stat is None else stat.size,
            "sha256": row.sha256,
            "user_s": cpu1[0] - cpu0[0],
            "sys_s": cpu1[1] - cpu0[1],
            "minor_faults": faults,
            "rss_before_kib": rss_before,
            "hwm_before_kib": hwm_before,
            "hwm_after_kib": hwm_after,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
    finally:
        runtime.close()


def run_bare(job: Job) -> dict[str, Any]:
    """Fresh URL from the API, then bare httpx ``iter_raw`` to nowhere: the baseline."""
    import httpx

    from workers.download import CHUNK_BYTES

    chunk_bytes: int | None = job.get("chunk_bytes") or CHUNK_BYTES
    headers = {"authorization": f"Bearer {job['api_key']}", "accept": "application/json"}
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)) as client:
        _settle_allocator(job)
        cpu0 = _cpu_seconds()
        faults0 = _minor_faults()
        started = time.perf_counter()
        api = client.get(f"{job['base_url']}/recordings/{job['recording_id']}", headers=headers)
        api.raise_for_status()
        url = api.json()["data"]["download_urls"]["mp3"]
        size = 0
        with client.stream("GET", url, headers={"accept-encoding": "identity"}) as response:
            response.raise_for_status()
            for chunk in response.iter_raw(chunk_bytes):
                size += len(chunk)
        seconds = time.perf_counter() - started
        cpu1 = _cpu_seconds()
        faults = _minor_faults() - faults0
    return {
        "role": "bare",
        "state": "streamed",
        "seconds": seconds,
        "bytes": size,
        "user_s": cpu1[0] - cpu0[0],
        "sys_s": cpu1[1] - cpu0[1],
        "minor_faults": faults,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main(argv: list[str] | None = None) -> None:
    """Dispatch on the role; measured roles read their job from stdin."""
    parser = argparse.ArgumentParser(prog="bench/capture_child.py", description=__doc__)
    parser.add_argument("role", choices=("emulator", "moto", "callrec", "bare"))
    parser.add_argument("--rec", action="append", default=[], help="ID:BYTES (emulator only)")
    parser.add_argument(
        "--mib-per-s",
        type=float,
        default=0.0,
        help="cap each audio body at this rate (emulator only; 0: no cap)",
    )
    args = parser.parse_args(argv)
    _die_with_parent()
    _exit_on_term()
    if args.role == "emulator":
        run_emulator(args.rec, args.mib_per_s)
    elif args.role == "moto":
        run_moto()
    else:
        job = json.loads(sys.stdin.read())
        runner = run_callrec if args.role == "callrec" else run_bare
        # A watchdog: never outlive the parent's own deadline by much.
        deadline = float(job.get("deadline_s", 3600))
        watchdog = threading.Timer(deadline, lambda: os._exit(124))
        watchdog.daemon = True
        watchdog.start()
        _emit(runner(job))
        os._exit(0)  # skip interpreter teardown (and the watchdog thread)


if __name__ == "__main__":
    main()
