"""CPU per webhook of the whole request path in one process, callrec vs bare, no HTTP.

Calls each WSGI app (``ingest.app.create_app`` and ``bench.bare_app.create_bare_app``, with the
receiver benchmark's settings) directly with pre-built environs of distinct signed deliveries,
from ``--threads`` threads (gunicorn's ``--threads``), and prints process CPU ms per request
(the least of ``--repeat`` interleaved runs) and the CPU ratio bare/callrec: the ceiling of
the req/s ratio on CPU-bound cores, without the noise of a busy machine's wall clock. Socket
I/O and gunicorn's own parsing are left out (they cost both apps the same). No relay runs.
``--profile PREFIX`` writes per-thread CPU profiles of both apps.

    python bench/request_cpu.py                          # SQLite ledger (embedded)
    python bench/request_cpu.py --postgres               # a fresh PostgreSQL database
    python bench/request_cpu.py --profile /tmp/req       # + /tmp/req.callrec, /tmp/req.bare
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import callrec_env, print_table
from bench.webhook_loads import LOADS, PUBLIC_BASE_URL, WebhookLoad

DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

WsgiApp = Callable[[dict[str, Any], Any], Any]


def environment(
    folder: Path, load: WebhookLoad, database_url: str | None
) -> contextlib.AbstractContextManager[None]:
    """The receiver benchmark's CALLREC_* settings in os.environ; restored after."""
    from emulators.sandbox import sandbox_env

    env = sandbox_env(folder, CALLREC_PUBLIC_BASE_URL=PUBLIC_BASE_URL, **load.env())
    if database_url:
        env["CALLREC_DATABASE_URL"] = database_url
    return callrec_env(env)


def environs(load: WebhookLoad, tag: str, count: int) -> list[dict[str, Any]]:
    """One WSGI environ per distinct signed delivery (bodies as fresh streams)."""
    from werkzeug.test import EnvironBuilder

    built = []
    for index in range(count):
        signed = load.request(tag, index)
        builder = EnvironBuilder(
            path=load.route,
            method="POST",
            headers=signed.headers,
            data=signed.body,
            base_url=PUBLIC_BASE_URL,
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        environ["wsgi.input"] = io.BytesIO(signed.body)
        built.append(environ)
    return built


def drive(
    app: WsgiApp, batch: Sequence[dict[str, Any]], threads: int, profile: Any = None
) -> float:
    """Send ``batch`` through ``app`` from ``threads`` threads; the process CPU seconds.

    ``profile``: a ``pstats.Stats``-like collector (``add``) given each thread's CPU profile.
    """
    failures: list[str] = []
    profiles: list[Any] = []

    def start_response(status: str, _headers: Any, _exc: Any = None) -> Any:
        if not status.startswith("200"):
            failures.append(status)
        return lambda _data: None

    def run(part: Sequence[dict[str, Any]]) -> None:
        profiler = None
        if profile is not None:
            import cProfile

            profiler = cProfile.Profile(time.thread_time)  # CPU, not wall (fsync waits)
            profiler.enable()
        for environ in part:
            body = app(environ, start_response)
            try:
                for _chunk in body:
                    pass
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        if profiler is not None:
            profiler.disable()
            profiles.append(profiler)

    workers = [threading.Thread(target=run, args=(batch[k::threads],)) for k in range(threads)]
    cpu = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu = time.process_time() - cpu
    if failures:
        raise RuntimeError(f"{len(failures)} non-200 answers, e.g. {failures[0]}")
    for profiler in profiles:
        profile.add(profiler)
    return cpu


def measure(
    load: WebhookLoad,
    requests: int,
    thread_counts: Sequence[int],
    repeat: int,
    profile: str | None,
) -> list[list[object]]:
    from bench.bare_app import create_bare_app
    from config.logging import configure_logging
    from config.settings import load_settings
    from ingest.app import create_app, state
    from ledger import migrate

    settings = load_settings()
    migrate(settings.database_url)
    apps: dict[str, Any] = {"bare": create_bare_app(), "callrec": create_app(settings)}
    committer = state_of(apps["callrec"], state).committer
    rows: list[list[object]] = []
    sink = open(os.devnull, "w")  # noqa: SIM115  # the JSON log lines, as gunicorn's stderr
    with contextlib.redirect_stderr(sink):
        configure_logging(settings.log_level, settings.log_format)  # its handler writes to sink
        for name, app in apps.items():  # warm-up: pools, statement caches, imports
            drive(app.wsgi_app, environs(load, f"warm-{name}", 100), 4)
        for threads in thread_counts:
            cpu: dict[str, float] = {"bare": math.inf, "callrec": math.inf}
            for attempt in range(repeat):  # interleaved; the least CPU of each (least noise)
                for name, app in apps.items():
                    committer.batches = committer.accepts = 0
                    tag = f"{name}-t{threads}-{attempt}-{time.time_ns()}"
                    used = drive(app.wsgi_app, environs(load, tag, requests), threads)
                    cpu[name] = min(cpu[name], used)
                    if name == "callrec":
                        per_commit = committer.accepts / max(1, committer.batches)
            rows.append(
                [
                    threads,
                    requests,
                    cpu["bare"] / requests * 1000,
                    cpu["callrec"] / requests * 1000,
                    (cpu["callrec"] - cpu["bare"]) / requests * 1000,
                    cpu["bare"] / cpu["callrec"],
                    per_commit,
                ]
            )
        if profile:
            import pstats

            for name, app in apps.items():
                stats = pstats.Stats()
                batch = environs(load, f"profile-{name}-{time.time_ns()}", requests)
                drive(app.wsgi_app, batch, thread_counts[-1], stats)
                stats.dump_stats(f"{profile}.{name}")
    sink.close()
    return rows


def state_of(app: Any, state: Callable[[], Any]) -> Any:
    with app.app_context():
        return state()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/request_cpu.py", description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL ledger")
    parser.add_argument("--postgres-admin-url", default=DEFAULT_PG_ADMIN)
    parser.add_argument("--provider", default="telnyx", choices=sorted(LOADS))
    parser.add_argument("--requests", type=int, default=2000, help="requests per row (2000)")
    parser.add_argument("--threads", default="1,8", help="thread counts (default 1,8)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="interleaved repeats per row; the least CPU counts (default 3)",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="write CPU profiles (cProfile, every thread, the last thread "
        "count) of each app to PREFIX.callrec and PREFIX.bare",
    )
    args = parser.parse_args(argv)
    load = LOADS[args.provider]()
    folder = Path(tempfile.mkdtemp(prefix="callrec-bench-request-cpu-"))
    try:
        with contextlib.ExitStack() as stack:
            url = None
            if args.postgres:
                from emulators.sandbox import fresh_postgres_database

                url = stack.enter_context(
                    fresh_postgres_database(args.postgres_admin_url, prefix="callrec_bench_")
                )
            stack.enter_context(environment(folder, load, url))
            threads = [int(t) for t in args.threads.split(",") if t.strip()]
            rows = measure(load, args.requests, threads, args.repeat, args.profile)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"route {load.route}; ledger {'PostgreSQL' if args.postgres else 'SQLite'}; "
        "one process, WSGI calls (no sockets, no gunicorn)"
    )
    print_table(
        [
            "threads",
            "requests",
            "bare cpu ms/req",
            "callrec cpu ms/req",
            "extra ms/req",
            "cpu ratio",
            "accepts/commit",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
