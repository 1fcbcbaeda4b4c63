"""The relay's publish alone: CPU per capture wake-up, as ``callrec relay`` sends them.

Accepts ``--rows`` ledger rows, then runs the relay loop (``workers.relay.relay``, batches of
500: read unpublished ids, publish one message each, mark them enqueued) in this process until
every row is published, and prints this process's CPU ms per message (the broker's own CPU
is not included: Redis is a separate server; the SQLite broker's work is in this process).
Checks that the broker holds one message per row.

    python bench/publish.py                      # embedded SQLite broker (sqla+sqlite)
    python bench/publish.py --redis              # Redis db 14, own queue prefix, keys removed
    python bench/publish.py --profile /tmp/pub   # + a CPU profile (cProfile) of the relay
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import broker_messages, callrec_env, drop_redis_keys, print_table

DEFAULT_REDIS = "redis://127.0.0.1:6379/14"


@contextlib.contextmanager
def environment(folder: Path, redis_url: str | None) -> Iterator[dict[str, str]]:
    """The sandbox's CALLREC_* settings in os.environ (Redis broker if given); restored after."""
    from emulators.sandbox import sandbox_env

    env = sandbox_env(folder, CALLREC_QUEUE_PREFIX=f"benchpub{uuid.uuid4().hex[:10]}")
    if redis_url:
        env["CALLREC_BROKER_URL"] = redis_url
    try:
        with callrec_env(env):
            yield env
    finally:
        if redis_url:
            drop_redis_keys(redis_url, env["CALLREC_QUEUE_PREFIX"])


def queued(env: dict[str, str]) -> int:
    return broker_messages(env["CALLREC_BROKER_URL"], f"{env['CALLREC_QUEUE_PREFIX']}.capture")


def add_rows(database_url: str, count: int, tag: str) -> None:
    from ledger import make_engine, make_session_factory
    from ledger.accept import accept_refs
    from providers.base import RecordingRef

    engine = make_engine(database_url)
    try:
        sessions = make_session_factory(engine)
        for start in range(0, count, 500):
            refs = [
                RecordingRef(recording_id=f"{tag}-{i}", hints={"channels": "dual"})
                for i in range(start, min(count, start + 500))
            ]
            accept_refs(sessions, "telnyx", "default", refs, source="webhook")
    finally:
        engine.dispose()


def measure(env: dict[str, str], rows: int, profile: str | None) -> list[list[object]]:
    from ledger import migrate, unpublished_rows
    from workers.relay import relay
    from workers.tasks import get_runtime

    migrate(env["CALLREC_DATABASE_URL"])
    runtime = get_runtime()
    results: list[list[object]] = []
    add_rows(env["CALLREC_DATABASE_URL"], 50, "warm")
    relay(runtime, threading.Event(), max_rounds=2)  # broker tables, connections, imports
    before = queued(env)
    add_rows(env["CALLREC_DATABASE_URL"], rows, "bench")
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    cpu, wall = time.process_time(), time.perf_counter()
    published = 0
    while unpublished_rows(runtime.sessions, 1):
        published += relay(runtime, threading.Event(), max_rounds=1)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    in_broker = queued(env) - before
    results.append(
        [
            env["CALLREC_BROKER_URL"].split(":", 1)[0],
            published,
            in_broker,
            cpu / published * 1000,
            wall / published * 1000,
        ]
    )
    runtime.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/publish.py", description=__doc__)
    parser.add_argument("--redis", action="store_true", help="Redis broker instead of SQLite")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--rows", type=int, default=3000, help="rows to publish (3000)")
    parser.add_argument("--profile", help="write a cProfile (CPU time) of the relay here")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="callrec-bench-publish-"))
    try:
        with environment(folder, args.redis_url if args.redis else None) as env:
            rows = measure(env, args.rows, args.profile)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(
        ["broker", "published", "broker messages", "cpu ms/message", "wall ms/message"], rows
    )
    ok = all(row[1] == row[2] == args.rows for row in rows)
    if not ok:
        print("MISMATCH: published rows and broker messages differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
