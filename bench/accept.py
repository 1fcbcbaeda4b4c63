"""The ledger accept path alone: CPU and wall time per accepted webhook, serial vs group commit.

No HTTP and no signature: ``GroupCommitter.accept`` called from 1, 4 and 8 threads of one
process (gunicorn's ``--threads``), each accept a distinct delivery and recording. Prints CPU
ms and wall ms per accept and the mean batch size (accepts per transaction). The serial row is
the cost the receiver paid per webhook before group commit.

    python bench/accept.py                       # SQLite (the embedded ledger), temp folder
    python bench/accept.py --postgres            # a fresh PostgreSQL database, dropped after
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table
from emulators.sandbox import fresh_postgres_database

DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def ledger_url(postgres: bool, admin_url: str) -> Iterator[str]:
    """A fresh ledger: a temp SQLite file, or a new PostgreSQL database; removed after."""
    if not postgres:
        folder = Path(tempfile.mkdtemp(prefix="callrec-bench-accept-"))
        try:
            yield f"sqlite:///{folder}/ledger.sqlite"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    with fresh_postgres_database(admin_url, prefix="callrec_bench_") as url:
        yield url


def measure(url: str, accepts: int, thread_counts: Sequence[int]) -> list[list[object]]:
    from ledger import make_engine, migrate
    from ledger.group_commit import GroupCommitter
    from providers.base import RecordingRef, WebhookEvent

    migrate(url)
    engine = make_engine(url, pre_ping=False)  # as the web process opens it
    rows: list[list[object]] = []
    try:
        committer = GroupCommitter(engine)

        def event(tag: str, index: int) -> WebhookEvent:
            ref = RecordingRef(recording_id=f"{tag}-r{index}", hints={"channels": "dual"})
            return WebhookEvent(f"{tag}-d{index}", "call.recording.saved", (ref,))

        for index in range(50):  # warm the pool and the statement cache
            committer.accept("telnyx", "default", event("warm", index))
        for threads in thread_counts:
            committer.batches = committer.accepts = 0
            share = accepts // threads

            def run(worker: int, threads: int = threads, share: int = share) -> None:
                for index in range(share):
                    committer.accept("telnyx", "default", event(f"t{threads}-{worker}", index))

            workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
            cpu, wall = time.process_time(), time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            done = share * threads
            rows.append(
                [
                    threads,
                    done,
                    cpu / done * 1000,
                    wall / done * 1000,
                    committer.accepts / max(1, committer.batches),
                ]
            )
    finally:
        engine.dispose()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/accept.py", description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--postgres-admin-url", default=DEFAULT_PG_ADMIN)
    parser.add_argument("--accepts", type=int, default=2000, help="accepts per row (2000)")
    args = parser.parse_args(argv)
    with ledger_url(args.postgres, args.postgres_admin_url) as url:
        rows = measure(url, args.accepts, (1, 4, 8))
    print(f"ledger: {'PostgreSQL' if args.postgres else 'SQLite'}; one process")
    print_table(["threads", "accepts", "cpu ms/accept", "wall ms/accept", "accepts/commit"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
