"""Small helpers shared by the bench scripts: processes, ports, waiting, percentiles, tables.

Kept generic on purpose: any bench script may use them (``wait_until`` is the sandbox's).
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from emulators.sandbox import ManagedProcess as SandboxProcess
from emulators.sandbox import wait_until as sandbox_wait_until

__all__ = [
    "REPO",
    "ManagedProcess",
    "broker_messages",
    "callrec_env",
    "child_env",
    "delete_rabbitmq_queues",
    "drop_broker_state",
    "drop_redis_keys",
    "free_port",
    "http_status",
    "median",
    "percentile",
    "print_table",
    "start_gunicorn",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


wait_until = sandbox_wait_until  # one polling loop for tests, benchmarks and demos


@contextlib.contextmanager
def callrec_env(env: Mapping[str, str]) -> Iterator[None]:
    """Exactly ``env``'s CALLREC_* settings in ``os.environ`` inside the block (for benches that
    build callrec's objects in their own process); the caller's are restored after."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("CALLREC_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def broker_messages(broker_url: str, queue: str) -> int:
    """Messages in ``queue`` of a Redis or embedded (``sqla+sqlite``) broker."""
    if broker_url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker_url, socket_timeout=10)
        try:
            return int(client.llen(queue))
        finally:
            client.close()
    from sqlalchemy import create_engine, text

    engine = create_engine(broker_url.removeprefix("sqla+"))
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM kombu_message m JOIN kombu_queue q"
                        " ON m.queue_id = q.id WHERE q.name = :q"
                    ),
                    {"q": queue},
                ).scalar_one()
            )
    finally:
        engine.dispose()


#: kombu's Redis transport: expiring bindings' deadlines, one sorted set for every exchange.
REDIS_BINDING_DEADLINES = "_kombu.binding_deadlines"


def drop_redis_keys(redis_url: str, prefix: str) -> None:
    """Delete the keys holding ``prefix`` (a bench's own queues, its control exchange's
    bindings) from a shared Redis, and its exchanges' entries in kombu's shared deadline set."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        members = [
            member for member, _ in client.zscan_iter(REDIS_BINDING_DEADLINES, match=f"*{prefix}*")
        ]
        if members:
            client.zrem(REDIS_BINDING_DEADLINES, *members)
    finally:
        client.close()


def delete_rabbitmq_queues(amqp_url: str, prefix: str) -> None:
    """Delete callrec's ``<prefix>.*`` queues and exchanges, and its broadcast exchanges, from
    a shared RabbitMQ (nothing else removes them). Best effort: a missing one is skipped."""
    from kombu import Connection

    from workers.celery_config import QUEUE_SUFFIXES, broadcast_exchanges

    names = [f"{prefix}.{suffix}" for suffix in QUEUE_SUFFIXES]
    deletes = [(kind, name) for name in names for kind in ("queue", "exchange")]
    deletes += [("exchange", name) for name in broadcast_exchanges(prefix)]
    with Connection(amqp_url, connect_timeout=10) as connection:
        for kind, name in deletes:
            with contextlib.suppress(Exception):  # a failed delete closes its channel
                channel = connection.channel()
                getattr(channel, f"{kind}_delete")(name)
                channel.close()


def drop_broker_state(broker_url: str, prefix: str) -> None:
    """Remove what a stack with queue prefix ``prefix`` left on a shared broker server (Redis
    keys, RabbitMQ queues); an embedded broker lives in the stack's own folder."""
    if broker_url.startswith(("redis://", "rediss://")):
        drop_redis_keys(broker_url, prefix)
    elif broker_url.startswith(("amqp://", "pyamqp://")):
        delete_rabbitmq_queues(broker_url, prefix)


def http_status(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 2.0,
) -> int | None:
    """The status of one plain-HTTP request, or None when the server does not answer."""
    scheme, _, rest = url.partition("://")
    if scheme != "http":
        raise ValueError("only http:// URLs")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    connection = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        connection.request(method, "/" + path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


ManagedProcess = SandboxProcess  # the one process wrapper of tests, benchmarks and demos


def child_env(stack_env: Mapping[str, str]) -> dict[str, str]:
    """This process's env without any CALLREC_* of the caller, plus the stack's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update(stack_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_gunicorn(
    app: str, env: Mapping[str, str], workdir: Path, workers: int, threads: int, name: str
) -> tuple[ManagedProcess, int]:
    """``gunicorn APP`` on a free loopback port; returns once ``/healthz`` answers 200."""
    port = free_port()
    server = ManagedProcess(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
            "--log-level",
            "warning",
            app,
        ],
        env=env,
        cwd=workdir,
        log_path=workdir / f"{name}.log",
        name=name,
    )
    try:

        def healthy() -> bool:
            if not server.alive():
                raise RuntimeError(f"{name} exited early:\n{server.log_tail()}")
            return http_status(f"http://127.0.0.1:{port}/healthz", timeout=1.0) == 200

        wait_until(healthy, 60, 0.2, f"{name} /healthz")
    except BaseException:
        server.stop()
        raise
    return server, port


@dataclass
class Usage:
    """CPU seconds and peak RSS of a process tree, summed over its live processes."""

    cpu_s: float = 0.0
    peak_rss_kib: int = 0  # sum of every process's VmHWM
    largest_kib: int = 0  # the largest single VmHWM
    processes: int = 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                found += [int(c) for c in f.read().split()]
    return found


def tree_usage(pid: int) -> Usage:
    """CPU (user+sys) and VmHWM of ``pid`` and its descendants, read from /proc (Linux)."""
    usage = Usage()
    ticks = os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat", encoding="ascii") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{current}/status", encoding="ascii") as f:
                hwm = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
        except OSError:
            continue
        usage.cpu_s += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        usage.peak_rss_kib += hwm
        usage.largest_kib = max(usage.largest_kib, hwm)
        usage.processes += 1
        pending += _children(current)
    return usage


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle since boot, all cores (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def median(values: Sequence[float]) -> float:
    """The median (mean of the middle two for an even count); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, file: IO[str] | None = None
) -> None:
    """Print rows as an aligned plain-text table (numbers right-aligned)."""
    out = file or sys.stdout
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)
    out.flush()
