"""A whole callrec for the stack benchmarks (``end_to_end.py``, ``burst.py``), on loopback.

One :class:`BenchStack` per stack kind: a temp folder, moto S3 and a provider emulator each in
their own process (``bench/emulator_child.py``), the ledger (SQLite file, or a fresh PostgreSQL
database), the broker (SQLite file, or RabbitMQ with queues of a unique prefix), and the callrec
processes as the Procfile runs them (gunicorn web, relay, Celery workers, beat). Closing it
stops every process, drops the database and deletes the RabbitMQ queues and exchanges.

Timings are callrec's production defaults (task limit, lease, visibility, retries), not the
test sandbox's short ones: a row waiting its turn in a long queue must not look "stuck".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.capture import FAKE_AWS, Bench, BenchError, Server
from bench.common import (
    ManagedProcess,
    Usage,
    child_env,
    delete_rabbitmq_queues,
    start_gunicorn,
    tree_usage,
    wait_until,
)

__all__ = [
    "DEFAULT_AMQP",
    "DEFAULT_PG_ADMIN",
    "EMULATOR_CHILD",
    "STACKS",
    "BenchStack",
    "LedgerRow",
    "Usage",
    "WorkerOptions",
    "add_stack_options",
    "load_note",
    "read_stack_options",
    "run_stacks",
    "tree_usage",
]

STACKS = ("embedded", "pg-rabbitmq")
EMULATOR_CHILD = Path(__file__).with_name("emulator_child.py")
DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"
#: The settings defaults (config/settings.py) the sandbox shortens for tests.
PRODUCTION_TIMINGS = {
    "CALLREC_SWEEP_INTERVAL_SECONDS": "30",
    "CALLREC_TASK_TIME_LIMIT_SECONDS": "540",
    "CALLREC_STUCK_AFTER_SECONDS": "600",
    "CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS": "900",
    "CALLREC_RETRY_BASE_SECONDS": "2",
    "CALLREC_RETRY_MAX_SECONDS": "300",
    "CALLREC_HTTP_TIMEOUT_SECONDS": "30",
}
READY_TIMEOUT_S = 120.0
T = TypeVar("T")


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    """The options both stack benchmarks share: stacks, worker flags, servers, --keep."""
    parser.add_argument("--stack", action="append", choices=STACKS, help="repeatable (default all)")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="Celery --concurrency (default 4, the Procfile's)",
    )
    parser.add_argument("--pool", default="prefork", choices=("prefork", "threads", "solo"))
    parser.add_argument(
        "--prefetch", type=int, default=None, help="--prefetch-multiplier (default callrec's 1)"
    )
    parser.add_argument("--postgres-admin-url", default=DEFAULT_PG_ADMIN)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")


def read_stack_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``args.stacks`` and ``args.worker_options`` from :func:`add_stack_options`' flags."""
    args.stacks = args.stack or list(STACKS)
    if min(args.workers, args.concurrency) < 1:
        parser.error("--workers and --concurrency must be >= 1")
    args.worker_options = WorkerOptions(args.workers, args.pool, args.concurrency, args.prefetch)


def run_stacks(
    args: Any,
    run_stack: Callable[[str, Bench, Any], T],
    summarize: Callable[[list[T], Any], bool],
) -> int:
    """``run_stack(kind, bench, args)`` for each of ``args.stacks``, then ``summarize`` and the
    total time; the exit status: 0 every target met, 1 one missed, 2 the benchmark itself
    failed, 130 interrupted. SIGTERM counts as Ctrl-C; the temp folder is removed unless
    ``args.keep``."""
    started = time.monotonic()

    def _sigterm(_signo: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _sigterm)
    bench = Bench(None)
    results: list[T] = []
    try:
        for kind in args.stacks:
            results.append(run_stack(kind, bench, args))
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    except (BenchError, TimeoutError, RuntimeError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:  # the stacks stopped their processes already; this removes the logs
            with contextlib.suppress(Exception):
                bench.close()
    ok = summarize(results, args)
    print(f"total {time.monotonic() - started:.0f}s")
    return 0 if ok else 1


def load_note() -> str:
    """The 1-minute load average against the CPU count (other work skews every figure)."""
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    busy = "  ** machine busy: figures unreliable **" if load > cpus / 2 else ""
    return f"load average {load:.2f} on {cpus} CPUs{busy}"


@dataclass(frozen=True)
class WorkerOptions:
    """The Celery worker flags both callrec and the no-op baseline run with."""

    workers: int = 1
    pool: str = "prefork"
    concurrency: int = 4  # the Procfile's WORKER_CONCURRENCY default
    prefetch: int | None = None  # None: callrec's worker_prefetch_multiplier (1)

    def argv(self, app: str, hostname: str) -> list[str]:
        flags = "--loglevel INFO --without-gossip --without-mingle --without-heartbeat"
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", self.pool]
        argv += ["--concurrency", str(self.concurrency), *flags.split(), "--hostname", hostname]
        if self.prefetch is not None:
            argv += ["--prefetch-multiplier", str(self.prefetch)]
        return argv

    def describe(self) -> str:
        prefetch = "1 (callrec default)" if self.prefetch is None else str(self.prefetch)
        return (
            f"{self.workers} worker(s) x --pool {self.pool} --concurrency "
            f"{self.concurrency}, prefetch multiplier {prefetch}"
        )


@dataclass(frozen=True)
class LedgerRow:
    """What the benchmarks read back of one recording row."""

    key: str
    state: str
    created_at: datetime
    stored_at: datetime | None
    attempts: int
    size_bytes: int | None
    sha256: str | None
    last_error: str | None


@dataclass
class BenchStack:
    """One stack kind's servers and callrec processes; ``close()`` removes all of it."""

    kind: str
    bench: Bench
    workdir: Path
    env: dict[str, str]
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    web_port: int = 0
    _cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def database_url(self) -> str:
        return self.env["CALLREC_DATABASE_URL"]

    # -- set-up -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        kind: str,
        bench: Bench,
        *,
        pg_admin: str = DEFAULT_PG_ADMIN,
        amqp_url: str = DEFAULT_AMQP,
        **overrides: str,
    ) -> BenchStack:
        """Moto S3 with a fresh bucket, the ledger and broker of ``kind``, migrated."""
        from emulators.sandbox import fresh_postgres_database, sandbox_env
        from ledger import migrate

        workdir = bench.tmp / kind
        workdir.mkdir()
        env = sandbox_env(workdir, **PRODUCTION_TIMINGS, **FAKE_AWS)
        stack = cls(kind, bench, workdir, env)
        try:
            moto = stack.start_server("moto", ["moto"])
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            client = stack.s3_client(moto.ready["endpoint"])
            client.create_bucket(Bucket=bucket)
            client.close()
            env.update(
                CALLREC_STORAGE_URL=f"s3://{bucket}/recordings",
                CALLREC_S3_ENDPOINT_URL=moto.ready["endpoint"],
            )
            if kind == "pg-rabbitmq":
                env["CALLREC_DATABASE_URL"] = stack._cleanup.enter_context(
                    fresh_postgres_database(pg_admin, prefix="callrec_bench_")
                )
                env["CALLREC_BROKER_URL"] = amqp_url
                stack._cleanup.callback(
                    delete_rabbitmq_queues, amqp_url, env["CALLREC_QUEUE_PREFIX"]
                )
            elif kind != "embedded":
                raise ValueError(f"unknown stack {kind!r}")
            env.update(overrides)
            migrate(stack.database_url)
        except BaseException:
            stack.close()
            raise
        return stack

    def start_server(self, name: str, args: Sequence[str]) -> Server:
        """An ``emulator_child.py`` role; stopped with the stack."""
        server = self.bench.start_server(name, args, READY_TIMEOUT_S, child=EMULATOR_CHILD)
        self._cleanup.callback(self.bench.stop_server, server)
        self.servers[name] = server
        return server

    def start_telnyx(self, count: int, size: int) -> tuple[Server, Path]:
        """The Telnyx emulator child with ``count`` recordings of ``size`` bytes, and callrec's
        Telnyx settings pointed at it; returns it and the file of webhook bodies it wrote."""
        bodies = self.workdir / "bodies.tsv"
        args = ["telnyx", "--count", str(count), "--size", str(size), "--bodies", str(bodies)]
        server = self.start_server("telnyx", args)
        self.env.update(
            CALLREC_TELNYX_API_KEY=server.ready["api_key"],
            CALLREC_TELNYX_API_BASE=server.ready["base_url"],
            CALLREC_TELNYX_AUDIO_HOSTS=server.ready["audio_host"],
        )
        return server, bodies

    @staticmethod
    def s3_client(endpoint: str) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=endpoint)

    # -- callrec processes --------------------------------------------------------------------

    def _service(
        self, name: str, argv: Sequence[str], marker: str, env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(
            argv,
            env=child_env(env or self.env),
            cwd=self.workdir,
            log_path=self.workdir / f"{name}.log",
            name=name,
        )
        self._cleanup.callback(process.stop)
        self.processes[name] = process

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"{name} exited early:\n{process.log_tail(30)}")
            return marker in process.log_path.read_text(errors="replace")

        wait_until(ready, READY_TIMEOUT_S, 0.1, f"{name} to log {marker!r}")
        return process

    def start_web(self, workers: int = 2, threads: int = 4) -> int:
        """gunicorn ``ingest.wsgi:app`` with the Procfile's defaults; returns its port."""
        server, port = start_gunicorn(
            "ingest.wsgi:app", child_env(self.env), self.workdir, workers, threads, "web"
        )
        self._cleanup.callback(server.stop)
        self.processes["web"] = server
        self.web_port = port
        return port

    def start_relay(self) -> ManagedProcess:
        return self._service(
            "relay", [sys.executable, "-m", "callrec_cli", "relay"], "relay started"
        )

    def start_beat(self) -> ManagedProcess:
        schedule = str(self.workdir / "beat-schedule")
        argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat"]
        argv += ["--loglevel", "INFO", "--schedule", schedule]
        return self._service("beat", argv, "beat: Starting")

    def start_workers(
        self,
        options: WorkerOptions,
        app: str = "workers.celery_app",
        name: str = "worker",
        env: Mapping[str, str] | None = None,
    ) -> list[ManagedProcess]:
        """``options.workers`` Celery workers of ``app``, each ready before this returns."""
        return [
            self._service(
                f"{name}{index}",
                options.argv(app, f"{name}{index}-{uuid.uuid4().hex[:6]}@%h"),
                "ready.",
                env,
            )
            for index in range(options.workers)
        ]

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            process.stop(timeout=30)

    def usage(self, prefix: str) -> Usage:
        """CPU and peak RSS of every running process whose name starts with ``prefix``."""
        total = Usage()
        for name, process in self.processes.items():
            if name.startswith(prefix) and process.alive():
                part = tree_usage(process.pid)
                total.cpu_s += part.cpu_s
                total.peak_rss_kib += part.peak_rss_kib
                total.largest_kib = max(total.largest_kib, part.largest_kib)
                total.processes += part.processes
        return total

    def tracebacks(self) -> list[str]:
        """Names of the callrec processes whose log holds a traceback."""
        return [
            name
            for name, process in self.processes.items()
            if "Traceback" in process.log_path.read_text(errors="replace")
        ]

    def log_count(self, prefix: str, text: str) -> int:
        """How many times ``text`` occurs in the logs of processes named ``prefix…``."""
        return sum(
            path.read_text(errors="replace").count(text)
            for path in self.workdir.glob(f"{prefix}*.log")
        )

    # -- the ledger ---------------------------------------------------------------------------

    def rows(self) -> list[LedgerRow]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                result = connection.execute(
                    text(
                        "SELECT recording_key, state, created_at, stored_at, attempts, size_bytes,"
                        " sha256, last_error FROM recordings"
                    )
                )
                return [
                    LedgerRow(
                        r[0],
                        r[1],
                        _aware(r[2]),
                        _aware(r[3]) if r[3] else None,
                        r[4],
                        r[5],
                        r[6],
                        r[7],
                    )
                    for r in result
                ]
        finally:
            engine.dispose()

    def state_counts(self) -> Counter[str]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT state, count(*) FROM recordings GROUP BY state")
                )
                return Counter({state: int(n) for state, n in rows})
        finally:
            engine.dispose()

    def stored_objects(self) -> int:
        """Objects under the stack's bucket (audio and metadata records)."""
        bucket = self.env["CALLREC_STORAGE_URL"].removeprefix("s3://").split("/", 1)[0]
        client = self.s3_client(self.env["CALLREC_S3_ENDPOINT_URL"])
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return sum(page.get("KeyCount", 0) for page in pages)
        finally:
            client.close()

    def close(self) -> None:
        self._cleanup.close()


def _aware(value: Any) -> datetime:
    """SQLite hands back naive UTC strings or datetimes; PostgreSQL aware datetimes."""
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
