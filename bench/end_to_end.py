"""End-to-end benchmark: signed Telnyx webhooks → recordings stored in moto S3, against a Celery
no-op drain with the same worker settings, measured in the same run.

Per stack (``embedded``: SQLite ledger + SQLite broker; ``pg-rabbitmq``: PostgreSQL + RabbitMQ;
both store to a moto S3 server, a real HTTP endpoint in its own process):

1. **callrec.** A Telnyx emulator (own process) serves N recordings of ``--size`` bytes. gunicorn
   (``ingest.wsgi:app``, ``--workers 2 --threads 4`` as the Procfile), the relay and the Celery
   worker(s) run as processes. ``--clients`` threads send one signed ``call.recording.saved``
   per recording (signed right before it is sent) over keep-alive connections. Each
   recording's latency is its ``stored_at`` in the ledger minus the moment its webhook was
   sent; recordings/s is N over first webhook sent → last ``stored_at``. Every row must end
   ``stored`` with the emulator's sha256, and the bucket must hold 2N objects (audio + record).
2. **no-op baseline.** The same worker flags (``--workers``, ``--pool``, ``--concurrency``,
   ``--prefetch``) on the same kind of broker (a fresh SQLite broker file / fresh RabbitMQ
   queues) run ``bench/noop_app.py``: callrec's Celery configuration with a task that only
   appends its completion time to a file. N no-op tasks are published up front, then the
   worker starts; tasks/s is (N-1) over first → last completion.

The ratio is callrec's recordings/s over the no-op tasks/s (issue target >= 0.5).

    python bench/end_to_end.py                                   # both stacks, 10,000 x 100 KiB
    python bench/end_to_end.py --stack embedded --recordings 300 # a quick look
    python bench/end_to_end.py --pool threads --concurrency 8 --prefetch 4

Everything listens on 127.0.0.1 and is stopped at the end (also on errors and Ctrl-C); the
PostgreSQL database and the RabbitMQ queues are dropped. Exit status: 0 target met, 1 missed,
2 the benchmark failed (a recording not stored, a process died, a deadline passed).
"""

from __future__ import annotations

import argparse
import http.client
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.capture import Bench, BenchError
from bench.common import drop_broker_state, percentile, print_table, wait_until
from bench.noop_app import TALLY_ENV, make_noop_app, publish_noops, read_tally
from bench.stack import (
    BenchStack,
    Usage,
    add_stack_options,
    load_note,
    read_stack_options,
    run_stacks,
    tree_usage,
)

TARGET_RATIO = 0.5
KIB = 1024


@dataclass
class Figures:
    """One stack's measurements."""

    stack: str
    recordings: int = 0
    stored: int = 0
    send_s: float = math.nan
    e2e_s: float = math.nan  # first webhook sent → last stored_at
    drain_s: float = math.nan  # first → last stored_at
    p50_s: float = math.nan
    p99_s: float = math.nan
    max_s: float = math.nan
    worker: Usage | None = None
    web_cpu_s: float = math.nan
    relay_cpu_s: float = math.nan
    emulator_cpu_s: float = math.nan
    moto_cpu_s: float = math.nan
    url_refreshes: int = 0
    objects: int = 0
    noop_publish_s: float = math.nan
    noop_drain_s: float = math.nan
    noop_worker: Usage | None = None
    problems: list[str] | None = None

    @property
    def rate(self) -> float:
        return self.recordings / self.e2e_s if self.e2e_s > 0 else math.nan

    @property
    def drain_rate(self) -> float:
        return (self.recordings - 1) / self.drain_s if self.drain_s > 0 else math.nan

    @property
    def noop_rate(self) -> float:
        return (self.recordings - 1) / self.noop_drain_s if self.noop_drain_s > 0 else math.nan

    @property
    def ratio(self) -> float:
        return self.rate / self.noop_rate if self.noop_rate > 0 else math.nan


# -- sending webhooks -------------------------------------------------------------------------


def send_webhooks(
    port: int, bodies: list[tuple[str, bytes]], clients: int, deadline_s: float, signer: Any
) -> tuple[dict[str, float], Counter[int]]:
    """POST every body from ``clients`` keep-alive threads, each signed (``signer``, a
    ``TelnyxWebhookSigner``) right before it is sent; (send time per id, statuses)."""
    sent: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    work = iter(bodies)
    deadline = time.monotonic() + deadline_s

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < deadline:
                with lock:
                    item = next(work, None)
                if item is None:
                    return
                rec_id, body = item
                headers = signer.headers(body)
                started = time.time()
                try:
                    connection.request("POST", "/webhooks/telnyx", body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    status = 0
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                with lock:
                    sent[rec_id] = started
                    statuses[status] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(1.0, deadline - time.monotonic()))
    return sent, statuses


# -- one stack --------------------------------------------------------------------------------


def run_callrec(stack: BenchStack, args: argparse.Namespace, figures: Figures) -> None:
    """Webhooks in, wait until every row is final, read the ledger and the processes."""
    emulator, bodies_path = stack.start_telnyx(args.recordings, args.size)
    ready = emulator.ready
    stack.env["CALLREC_TELNYX_PUBLIC_KEY"] = args.signer.public_key_b64
    bodies = []
    for line in bodies_path.read_text(encoding="utf-8").splitlines():
        rec_id, _, body = line.partition("\t")
        bodies.append((rec_id, body.encode()))
    port = stack.start_web()
    stack.start_relay()
    stack.start_workers(args.worker_options)
    idle = _cpu_snapshot(stack)  # start-up CPU, subtracted: figures are per recording
    label = f"[{stack.kind}]"
    print(
        f"{label} stack up; sending {len(bodies)} webhooks from {args.clients} clients "
        f"({load_note()})",
        flush=True,
    )
    began = time.monotonic()
    sent, statuses = send_webhooks(port, bodies, args.clients, args.timeout, args.signer)
    figures.send_s = time.monotonic() - began
    if statuses.get(200, 0) != len(bodies):
        raise BenchError(f"webhook answers {dict(statuses)}, expected {len(bodies)} x 200")
    print(
        f"{label} webhooks sent in {figures.send_s:.1f}s "
        f"({len(bodies) / figures.send_s:.0f}/s); waiting for the drain",
        flush=True,
    )

    last_report = [time.monotonic()]

    def drained() -> bool:
        counts = stack.state_counts()
        final = counts["stored"] + counts["failed"]
        if time.monotonic() - last_report[0] > 15:
            last_report[0] = time.monotonic()
            print(f"{label}   {dict(counts)} after {time.monotonic() - began:.0f}s", flush=True)
        for name, process in stack.processes.items():
            if not process.alive():
                raise BenchError(f"{name} died:\n{process.log_tail(30)}")
        return final >= len(bodies)

    wait_until(
        drained,
        max(1.0, args.timeout - (time.monotonic() - began)),
        0.25,
        "every recording to be stored or failed",
    )
    figures.worker = stack.usage("worker")
    figures.worker.cpu_s -= idle["worker"]
    figures.web_cpu_s = stack.usage("web").cpu_s - idle["web"]
    figures.relay_cpu_s = stack.usage("relay").cpu_s - idle["relay"]
    figures.emulator_cpu_s = _cpu_of_server(stack, "telnyx") - idle["telnyx"]
    figures.moto_cpu_s = _cpu_of_server(stack, "moto") - idle["moto"]
    requests = stack.bench.query(emulator, "stats")["requests"]
    for name in [n for n in stack.processes if n != "moto"]:
        stack.stop(name)
    rows = stack.rows()
    figures.recordings = len(bodies)
    figures.url_refreshes = stack.log_count("worker", "fetching a fresh URL")
    figures.objects = stack.stored_objects()
    problems = _check(rows, ready["sha256"], args.size, len(bodies), figures.objects)
    figures.stored = sum(1 for r in rows if r.state == "stored")
    stored_at = {r.key: r.stored_at.timestamp() for r in rows if r.stored_at is not None}
    latencies = [stored_at[key] - sent[key] for key in stored_at if key in sent]
    if stored_at and sent:
        figures.e2e_s = max(stored_at.values()) - min(sent.values())
        figures.drain_s = max(stored_at.values()) - min(stored_at.values())
    figures.p50_s = percentile(latencies, 50)
    figures.p99_s = percentile(latencies, 99)
    figures.max_s = max(latencies, default=math.nan)
    figures.problems = problems + [f"traceback in {n}.log" for n in stack.tracebacks()]
    print(
        f"{label} callrec: {figures.stored}/{figures.recordings} stored in "
        f"{figures.e2e_s:.1f}s = {figures.rate:.1f} recordings/s; latency p50 "
        f"{figures.p50_s:.1f}s p99 {figures.p99_s:.1f}s; emulator requests {requests}",
        flush=True,
    )


def _cpu_of_server(stack: BenchStack, name: str) -> float:
    return tree_usage(stack.servers[name].process.pid).cpu_s


def _cpu_snapshot(stack: BenchStack) -> dict[str, float]:
    """CPU seconds each part has used so far (its start-up, before any recording)."""
    snapshot = {name: stack.usage(name).cpu_s for name in ("worker", "web", "relay")}
    snapshot.update({name: _cpu_of_server(stack, name) for name in ("telnyx", "moto")})
    return snapshot


def _check(rows: Sequence[Any], sha256: str, size: int, count: int, objects: int) -> list[str]:
    """What is wrong with the outcome (empty when every recording was stored exactly)."""
    problems = []
    states = Counter(r.state for r in rows)
    if len(rows) != count or states["stored"] != count:
        failed = Counter(r.last_error for r in rows if r.state != "stored")
        problems.append(
            f"{len(rows)} rows {dict(states)} for {count} webhooks; "
            f"reasons {dict(failed.most_common(3))}"
        )
    wrong = sum(
        1 for r in rows if r.state == "stored" and (r.sha256, r.size_bytes) != (sha256, size)
    )
    if wrong:
        problems.append(f"{wrong} stored rows with a wrong sha256 or size")
    if objects != 2 * states["stored"]:
        problems.append(f"{objects} objects in the bucket for {states['stored']} stored rows")
    return problems


def run_noop(stack: BenchStack, args: argparse.Namespace, figures: Figures) -> None:
    """The same worker flags on a fresh broker of the same kind, draining N no-op tasks."""
    from config.settings import load_settings

    folder = stack.workdir / "noop"
    folder.mkdir()
    tally = folder / "tally"
    env = dict(stack.env)
    env["CALLREC_QUEUE_PREFIX"] = env["CALLREC_QUEUE_PREFIX"] + "noop"
    if env["CALLREC_BROKER_URL"].startswith("sqla+sqlite"):
        env["CALLREC_BROKER_URL"] = f"sqla+sqlite:///{folder}/broker.sqlite"
    else:
        stack._cleanup.callback(
            drop_broker_state, env["CALLREC_BROKER_URL"], env["CALLREC_QUEUE_PREFIX"]
        )
    env[TALLY_ENV] = str(tally)
    app = make_noop_app(load_settings(env))
    began = time.monotonic()
    publish_noops(app, args.recordings)
    figures.noop_publish_s = time.monotonic() - began
    print(
        f"[{stack.kind}] no-op: {args.recordings} tasks published in "
        f"{figures.noop_publish_s:.1f}s; draining ({load_note()})",
        flush=True,
    )
    stack.start_workers(args.worker_options, app="bench.noop_app", name="noop", env=env)
    # Start-up CPU is left out, as for callrec's worker; tasks already run by then are too.
    startup_cpu_s, done_at_ready = stack.usage("noop").cpu_s, len(read_tally(str(tally)))
    wait_until(
        lambda: len(read_tally(str(tally))) >= args.recordings,
        args.timeout,
        0.1,
        "every no-op task to run",
    )
    figures.noop_worker = stack.usage("noop")
    steady = max(1, args.recordings - done_at_ready)
    figures.noop_worker.cpu_s = (figures.noop_worker.cpu_s - startup_cpu_s) * (
        args.recordings / steady
    )
    for name in [n for n in stack.processes if n.startswith("noop")]:
        stack.stop(name)
    done = read_tally(str(tally))
    figures.noop_drain_s = max(done) - min(done)
    print(
        f"[{stack.kind}] no-op: {len(done)} tasks in {figures.noop_drain_s:.2f}s = "
        f"{figures.noop_rate:.1f} tasks/s",
        flush=True,
    )


def run_stack(kind: str, bench: Bench, args: argparse.Namespace) -> Figures:
    figures = Figures(kind)
    stack = BenchStack.open(kind, bench, pg_admin=args.postgres_admin_url, amqp_url=args.amqp_url)
    try:
        run_callrec(stack, args, figures)
        run_noop(stack, args, figures)
    finally:
        if args.keep:
            print(f"[{kind}] logs in {stack.workdir}")
        stack.close()
    return figures


# -- report -----------------------------------------------------------------------------------


def summarize(results: Sequence[Figures], args: argparse.Namespace) -> bool:
    """Print the tables; True when every stack met the ratio and stored everything."""
    print()
    print(
        f"end-to-end benchmark: {args.recordings} recordings x {args.size / KIB:g} KiB, "
        f"{args.clients} webhook clients, {args.worker_options.describe()}; {load_note()}"
    )
    print_table(
        [
            "stack",
            "stored",
            "webhooks s",
            "e2e s",
            "rec/s",
            "drain rec/s",
            "p50 s",
            "p99 s",
            "max s",
            "no-op tasks/s",
            "ratio",
            "target",
            "",
        ],
        [
            [
                f.stack,
                f"{f.stored}/{f.recordings}",
                f.send_s,
                f.e2e_s,
                f.rate,
                f.drain_rate,
                f.p50_s,
                f.p99_s,
                f.max_s,
                f.noop_rate,
                f.ratio,
                f">= {TARGET_RATIO}",
                "PASS" if f.ratio >= TARGET_RATIO else "MISS",
            ]
            for f in results
        ],
    )
    print()
    print(
        "CPU after start-up (per recording / per no-op task in ms; user+sys of each process"
        " tree) and peak RSS"
    )
    rows = []
    for f in results:
        worker = f.worker or Usage()
        noop = f.noop_worker or Usage()
        per = 1000 / max(f.recordings, 1)
        rows.append(
            [
                f.stack,
                worker.cpu_s * per,
                f.web_cpu_s * per,
                f.relay_cpu_s * per,
                f.emulator_cpu_s * per,
                f.moto_cpu_s * per,
                noop.cpu_s * per,
                worker.peak_rss_kib / KIB,
                worker.largest_kib / KIB,
                noop.peak_rss_kib / KIB,
                f.url_refreshes,
                f.objects,
            ]
        )
    print_table(
        [
            "stack",
            "worker ms",
            "web ms",
            "relay ms",
            "emulator ms",
            "moto ms",
            "no-op worker ms",
            "worker RSS MiB (sum)",
            "largest process MiB",
            "no-op RSS MiB (sum)",
            "URL refreshes",
            "S3 objects",
        ],
        rows,
    )
    ok = True
    for f in results:
        for problem in f.problems or []:
            print(f"PROBLEM [{f.stack}]: {problem}")
        ok = ok and not f.problems and f.ratio >= TARGET_RATIO
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/end_to_end.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--recordings", type=int, default=10_000, help="N (default 10000)")
    parser.add_argument(
        "--size", type=int, default=100 * KIB, help="bytes per recording (default 102400)"
    )
    parser.add_argument("--clients", type=int, default=8, help="webhook client threads")
    parser.add_argument(
        "--timeout", type=float, default=None, help="deadline of each phase, s (default 120 + N/5)"
    )
    add_stack_options(parser)
    args = parser.parse_args(argv)
    read_stack_options(parser, args)
    if min(args.recordings, args.size, args.clients) < 1:
        parser.error("sizes must be >= 1")
    args.timeout = args.timeout or 120 + args.recordings / 5
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from emulators.telnyx import TelnyxWebhookSigner

    args = parse_args(argv)
    args.signer = TelnyxWebhookSigner()  # its public key goes to callrec's settings
    return run_stacks(args, run_stack, summarize)


if __name__ == "__main__":
    sys.exit(main())
