"""Receiver benchmark: signed webhooks through each provider route of callrec vs verify-only routes.

For each stack (``embedded``: SQLite ledger + ``sqla+sqlite`` broker; ``postgres-redis``), two
gunicorn servers run side by side with identical settings: callrec (``ingest.wsgi:app``: verify,
ledger, relay publish) and the baseline (``bench.bare_app:app``: verify only). Per provider
route (``bench/webhook_loads.py``: Telnyx, ...), pre-signed, distinct recording-ready
deliveries are sent from ``--concurrency`` keep-alive clients
(``wrk`` with a generated Lua script when installed, else Python processes), in interleaved
rounds; the medians, the callrec/bare throughput ratio and the ledger row count are printed.
``--floor`` adds two more servers, ``bench.floor_app``'s simplest durable accepts (verify,
parse, then one autocommitted INSERT per request: ``floor``; or one multi-row INSERT per group
of requests that arrive together, as callrec's group commit: ``floor-batched``), and prints
each floor/bare and callrec/floor: how much of the bare throughput a durable accept keeps on
this machine, and how close callrec is.

    python bench/receiver.py                 # both stacks, default sizes (a few minutes)
    python bench/receiver.py --quick         # smoke run, under a minute
    python bench/receiver.py --stacks embedded --requests 3000 --rounds 3
    python bench/receiver.py --floor --providers telnyx

Everything runs on loopback; servers, temp dirs, the PostgreSQL database and the Redis keys it
creates are removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ManagedProcess,
    broker_messages,
    child_env,
    drop_redis_keys,
    machine_busy_seconds,
    median,
    percentile,
    print_table,
    start_gunicorn,
    tree_usage,
    wait_until,
)
from bench.webhook_loads import LOADS, PUBLIC_BASE_URL, WebhookLoad

STACKS = ("embedded", "postgres-redis")
#: The servers each run compares, by target name: WSGI app of ``gunicorn``.
APPS = {
    "bare": "bench.bare_app:app",
    "callrec": "ingest.wsgi:app",
    "floor": "bench.floor_app:app",
    "floor-batched": "bench.floor_app:batched_app",
}
TARGET_RATIO = 0.7
TARGET_P99_MS = 10.0
TARGET_P99_CLIENTS = 8
SIGNATURE_WINDOW_S = 280.0  # Telnyx signatures are valid 300 s; a round must end before
DRAIN_TIMEOUT_S = 120.0
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"

# wrk: each thread takes every n-th pre-signed request from the data file; ``delay()`` reserves
# one request per send so no connection sends past the thread's share, and the thread stops
# once every share is answered (then Python interrupts wrk, which prints ``done()``).
WRK_SCRIPT = r"""
local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local tspec = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, tspec)  -- CLOCK_MONOTONIC
  return tonumber(tspec.tv_sec) + tonumber(tspec.tv_nsec) * 1e-9
end

local threads = {}
local created = 0
function setup(thread)
  thread:set("tid", created)
  created = created + 1
  table.insert(threads, thread)
end

local reqs = {}
quota, reserved, issued, answered, accepted, overflow = 0, 0, 0, 0, 0, 0
started, finished, last = nil, nil, nil
statuses = {}
samples = {}
local done_sent = false

local function finish()
  if not done_sent then
    done_sent = true
    finished = last or now()
    io.write("BENCH_THREAD_DONE\n")
    io.flush()
  end
  wrk.thread:stop()
end

function init(args)
  local path, nthreads, route = args[1], tonumber(args[2]), args[3]
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local encoded, body = line:match("^([^\t]*)\t(.*)$")
      local headers = {}
      for pair in encoded:gmatch("[^\31]+") do
        local name, value = pair:match("^([^:]+):(.*)$")
        headers[name] = value
      end
      reqs[#reqs + 1] = wrk.format("POST", route, headers, body)
    end
    i = i + 1
  end
  quota = #reqs
end

function delay()
  if reserved < quota then
    reserved = reserved + 1
    return 0
  end
  if answered >= quota then finish() end
  return 3600000  -- park this connection: this thread's share is all sent
end

function request()
  if reserved == 0 then  -- wrk's own check of the script at startup: not sent
    return reqs[1]
  end
  issued = issued + 1
  if started == nil then started = now() end
  if issued > quota then  -- a resend after a socket error: repeat the last one
    overflow = overflow + 1
    return reqs[quota]
  end
  return reqs[issued]
end

function response(status, headers, body)
  answered = answered + 1
  last = now()
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 and body and string.find(body, '"accepted"', 1, true) then
    accepted = accepted + 1
  elseif #samples < 3 then
    samples[#samples + 1] = status .. " " .. string.sub((body or ""):gsub("%s", " "), 1, 200)
  end
  if answered >= quota then finish() end
end

function done(summary, latency, requests)
  local t0, t1 = nil, nil
  local total = {answered = 0, accepted = 0, quota = 0, overflow = 0}
  local codes = {}
  for _, t in ipairs(threads) do
    local s, f = t:get("started"), t:get("finished") or t:get("last")
    if s and (t0 == nil or s < t0) then t0 = s end
    if f and (t1 == nil or f > t1) then t1 = f end
    for k, _ in pairs(total) do total[k] = total[k] + (t:get(k) or 0) end
    for code, n in pairs(t:get("statuses") or {}) do codes[code] = (codes[code] or 0) + n end
    for _, line in ipairs(t:get("samples") or {}) do io.write("BENCH_SAMPLE ", line, "\n") end
  end
  local parts = {}
  for code, n in pairs(codes) do parts[#parts + 1] = string.format('"%d":%d', code, n) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"seconds":%.6f,"answered":%d,"accepted":%d,"quota":%d,"overflow":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"socket_errors":%d,"timeouts":%d,"statuses":{%s}}\n',
    (t0 and t1) and (t1 - t0) or 0, total.answered, total.accepted, total.quota,
    total.overflow, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, e.connect + e.read + e.write, e.timeout,
    table.concat(parts, ",")))
  io.flush()
end
"""


# -- results --------------------------------------------------------------------------------


@dataclass
class RoundResult:
    """One measured batch against one server."""

    target: str  # a key of APPS
    expected: int
    answered: int
    accepted: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0
    samples: list[str] = field(default_factory=list)
    drain_s: float = math.nan  # callrec: time after the batch until the relay had published all
    #: CPU ms per answered request: "web" (the server's process tree), "relay", "load" (the load
    #: generator and this script), "rest" (everything else on the machine: databases, brokers,
    #: the kernel's own threads) and "total" (the whole machine); measured from /proc.
    cpu_ms: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else math.nan

    @property
    def errors(self) -> int:
        """Non-200 answers, socket errors and requests never answered."""
        non_200 = sum(n for code, n in self.statuses.items() if code != 200)
        return non_200 + self.socket_errors + max(0, self.expected - self.answered)


# -- requests ---------------------------------------------------------------------------------


HEADER_SEPARATOR = "\x1f"  # between "name:value" pairs in a batch line


def sign_batch(load: WebhookLoad, count: int, tag: str, path: Path) -> None:
    """Write ``count`` distinct signed deliveries as ``name:value\x1f...<TAB>body`` lines."""
    with path.open("w", encoding="utf-8") as out:
        for index in range(count):
            signed = load.request(tag, index)
            encoded = HEADER_SEPARATOR.join(f"{k}:{v}" for k, v in signed.headers.items())
            text = signed.body.decode()
            if any(c in text or c in encoded for c in "\t\n"):
                raise RuntimeError("a webhook body and its headers must be single tab-free lines")
            out.write(f"{encoded}\t{text}\n")


def read_batch(path: Path) -> list[tuple[dict[str, str], bytes]]:
    """The deliveries written by :func:`sign_batch`: (headers, body)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        encoded, body = line.split("\t", 1)
        pairs = (pair.split(":", 1) for pair in encoded.split(HEADER_SEPARATOR) if pair)
        rows.append(({name: value for name, value in pairs}, body.encode()))
    return rows


# -- load generators -------------------------------------------------------------------------


def run_wrk(
    port: int, route: str, batch: Path, count: int, concurrency: int, workdir: Path, target: str
) -> RoundResult:
    """Send the batch with wrk; bounded by the signature window."""
    script = workdir / "receiver.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT)
    threads = max(1, min(2, concurrency, count))
    log = workdir / f"wrk-{target}-{uuid.uuid4().hex[:6]}.log"
    wrk = ManagedProcess(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(concurrency),
            "-d",
            f"{int(SIGNATURE_WINDOW_S)}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{route}",
            "--",
            str(batch),
            str(threads),
            route,
        ],
        log_path=log,
        name="wrk",
    )
    try:

        def finished() -> bool:
            return (
                not wrk.alive()
                or log.read_text(errors="replace").count("BENCH_THREAD_DONE") >= threads
            )

        with contextlib.suppress(TimeoutError):
            wait_until(finished, SIGNATURE_WINDOW_S, 0.05, "wrk threads")
        wrk.send_signal(signal.SIGINT)
        with contextlib.suppress(Exception):
            wrk.process.wait(30)
    finally:
        wrk.stop()
    text = log.read_text(errors="replace")
    found = re.search(r"^BENCH_JSON (.*)$", text, re.MULTILINE)
    if not found:
        raise RuntimeError(f"wrk printed no result:\n{text[-2000:]}")
    data = json.loads(found.group(1))
    return RoundResult(
        target=target,
        expected=count,
        answered=data["answered"],
        accepted=data["accepted"],
        seconds=data["seconds"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        statuses={int(k): v for k, v in data["statuses"].items()},
        socket_errors=data["socket_errors"] + data["timeouts"] + data["overflow"],
        samples=re.findall(r"^BENCH_SAMPLE (.*)$", text, re.MULTILINE),
    )


def _python_client(
    port: int,
    route: str,
    requests: list[tuple[dict[str, str], bytes]],
    start_at: float,
    results: Any,
) -> None:
    """One keep-alive client process: send ``requests`` in order, report latencies."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    accepted = socket_errors = 0
    samples: list[str] = []
    while time.monotonic() < start_at:
        time.sleep(0.001)
    first = time.monotonic()
    for headers, body in requests:
        began = time.perf_counter()
        try:
            connection.request("POST", route, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            socket_errors += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - began)
        statuses[response.status] += 1
        if response.status == 200 and b'"accepted"' in data:
            accepted += 1
        elif len(samples) < 3:
            samples.append(f"{response.status} {data[:200].decode(errors='replace')}")
    results.put(
        (first, time.monotonic(), latencies, dict(statuses), accepted, socket_errors, samples)
    )
    connection.close()


def run_python_load(
    port: int, route: str, batch: Path, count: int, concurrency: int, target: str
) -> RoundResult:
    """Send the batch from ``concurrency`` processes (when wrk is not installed)."""
    rows = read_batch(batch)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.monotonic() + 0.5
    procs = [
        context.Process(
            target=_python_client,
            args=(port, route, rows[i::concurrency], start_at, results),
            daemon=True,
        )
        for i in range(min(concurrency, count))
    ]
    for proc in procs:
        proc.start()
    parts = []
    try:
        deadline = time.monotonic() + SIGNATURE_WINDOW_S
        for _ in procs:
            parts.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    latencies = [value for part in parts for value in part[2]]
    statuses: Counter[int] = Counter()
    for part in parts:
        statuses.update(part[3])
    return RoundResult(
        target=target,
        expected=count,
        answered=len(latencies),
        accepted=sum(part[4] for part in parts),
        seconds=(max(p[1] for p in parts) - min(p[0] for p in parts)) if parts else 0.0,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=max(latencies, default=math.nan) * 1000,
        statuses=dict(statuses),
        socket_errors=sum(part[5] for part in parts),
        samples=[s for part in parts for s in part[6]][:3],
    )


# -- stacks -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """The settings of one stack and what to inspect afterwards."""

    name: str
    env: dict[str, str]

    @property
    def database_url(self) -> str:
        return self.env["CALLREC_DATABASE_URL"]


def _base_env(workdir: Path, loads: Sequence[WebhookLoad]) -> dict[str, str]:
    """The test sandbox's settings, with the keys every benchmarked route verifies with."""
    from emulators.sandbox import sandbox_env

    keys = {name: value for load in loads for name, value in load.env().items()}
    return sandbox_env(
        workdir,
        CALLREC_QUEUE_PREFIX=f"bench{uuid.uuid4().hex[:10]}",
        CALLREC_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        **keys,
    )


@contextlib.contextmanager
def open_stack(
    name: str, workdir: Path, loads: Sequence[WebhookLoad], pg_admin: str, redis_url: str
) -> Iterator[Stack]:
    """Create the stack's ledger (and broker keys); remove all of it on exit."""
    env = _base_env(workdir, loads)
    if name == "embedded":
        yield Stack(name, env)
        return
    import psycopg

    database = f"callrec_bench_{uuid.uuid4().hex[:10]}"
    admin = re.sub(r"^postgresql\+psycopg://", "postgresql://", pg_admin)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    prefix = env["CALLREC_QUEUE_PREFIX"]
    try:
        parts = urlsplit(admin)
        env["CALLREC_DATABASE_URL"] = urlunsplit(
            ("postgresql+psycopg", parts.netloc, f"/{database}", parts.query, "")
        )
        env["CALLREC_BROKER_URL"] = redis_url
        yield Stack(name, env)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        drop_redis_keys(redis_url, prefix)


def published_count(stack: Stack) -> int | None:
    """Capture messages waiting in the broker (nothing consumes them here)."""
    broker = stack.env["CALLREC_BROKER_URL"]
    queue = f"{stack.env['CALLREC_QUEUE_PREFIX']}.capture"
    try:
        return broker_messages(broker, queue)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        print(f"  (could not count broker messages: {type(exc).__name__}: {first})")
        return None


class Ledger:
    """Read-only queries against the stack's ledger (a plain engine: no write lock taken)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self._engine = create_engine(url)

    def _count(self, sql: str) -> int:
        from sqlalchemy import text

        with self._engine.connect() as connection:
            return int(connection.execute(text(sql)).scalar_one())

    def recordings(self) -> int:
        return self._count("SELECT count(*) FROM recordings")

    def deliveries(self) -> int:
        return self._count("SELECT count(*) FROM deliveries")

    def unpublished(self) -> int:
        return self._count("SELECT count(*) FROM recordings WHERE enqueued_at IS NULL")

    def close(self) -> None:
        self._engine.dispose()


# -- servers ----------------------------------------------------------------------------------


# -- the benchmark ----------------------------------------------------------------------------


@dataclass
class RouteReport:
    """All rounds of one provider route on one stack, plus the ledger check."""

    stack: str
    provider: str
    rounds: list[RoundResult] = field(default_factory=list)
    ledger_rows: int | None = None
    deliveries: int | None = None
    published: int | None = None
    callrec_accepted: int = 0

    def of(self, target: str) -> list[RoundResult]:
        return [r for r in self.rounds if r.target == target]


def run_stack(name: str, args: argparse.Namespace, root: Path, use_wrk: bool) -> list[RouteReport]:
    """Servers up; per provider route: warm-up, interleaved rounds, ledger check; torn down."""
    from ledger import migrate

    loads = [LOADS[provider]() for provider in args.providers]
    workdir = root / name
    workdir.mkdir()
    reports: list[RouteReport] = []
    with contextlib.ExitStack() as cleanup:
        stack = cleanup.enter_context(
            open_stack(name, workdir, loads, args.postgres_admin_url, args.redis_url)
        )
        migrate(stack.database_url)
        env = child_env(stack.env)
        servers = {}
        for target in args.targets:
            server, port = start_gunicorn(
                APPS[target], env, workdir, args.workers, args.threads, f"{target}-gunicorn"
            )
            cleanup.callback(server.stop)
            servers[target] = (server, port)
        # The relay process publishes what the web process committed: it runs through every
        # round, so its CPU (and the broker's) counts against callrec on these shared cores.
        relay = ManagedProcess(
            [sys.executable, "-m", "callrec_cli", "relay"],
            log_path=workdir / "relay.log",
            env=env,
            cwd=workdir,
            name="relay",
        )
        cleanup.callback(relay.stop)
        ledger = Ledger(stack.database_url)
        cleanup.callback(ledger.close)

        def measure(
            load: WebhookLoad, report: RouteReport, target: str, count: int, tag: str
        ) -> RoundResult:
            batch = workdir / f"batch-{tag}.tsv"
            sign_batch(load, count, tag, batch)
            server, port = servers[target]
            before = cpu_snapshot(server)
            if use_wrk:
                result = run_wrk(port, load.route, batch, count, args.concurrency, workdir, target)
            else:
                result = run_python_load(port, load.route, batch, count, args.concurrency, target)
            batch.unlink()
            if target == "callrec":
                report.callrec_accepted += result.accepted
                began = time.monotonic()
                try:
                    wait_until(
                        lambda: ledger.unpublished() == 0,
                        args.drain_timeout,
                        0.05,
                        "the relay to publish every new row",
                    )
                    result.drain_s = time.monotonic() - began
                except TimeoutError:
                    result.drain_s = math.inf
                    print(
                        f"  warning: {ledger.unpublished()} rows still unpublished after "
                        f"{args.drain_timeout:g}s",
                        flush=True,
                    )
            result.cpu_ms = cpu_per_request(before, cpu_snapshot(server), result.answered)
            for each, _port in servers.values():
                if not each.alive():
                    raise RuntimeError(f"{each.name} died:\n{each.log_tail()}")
            return result

        def cpu_snapshot(server: ManagedProcess) -> dict[str, float]:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            me = resource.getrusage(resource.RUSAGE_SELF)
            return {
                "web": tree_usage(server.pid).cpu_s,
                "relay": tree_usage(relay.pid).cpu_s,
                "load": children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime,
                "total": machine_busy_seconds(),
            }

        for load in loads:
            report = RouteReport(name, load.provider)
            label = f"[{name} {load.route}]"
            rows_before, deliveries_before = ledger.recordings(), ledger.deliveries()
            published_before = published_count(stack) or 0
            print(f"{label} warm-up: {args.warmup} requests per server", flush=True)
            for target in args.targets:
                measure(load, report, target, args.warmup, f"{name}-{load.provider}-w-{target}")
            for index in range(args.rounds):
                for target in round_order(args.targets, index):
                    result = measure(
                        load,
                        report,
                        target,
                        args.requests,
                        f"{name}-{load.provider}-r{index}-{target}",
                    )
                    report.rounds.append(result)
                    drain = (
                        "" if math.isnan(result.drain_s) else f", relay drain {result.drain_s:.2f}s"
                    )
                    cpu = "  ".join(f"{k} {v:.2f}" for k, v in result.cpu_ms.items())
                    print(
                        f"{label} round {index + 1}/{args.rounds} {target:7s} "
                        f"{result.rps:8.1f} req/s  p50 {result.p50_ms:6.2f} ms  "
                        f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}{drain}\n"
                        f"    CPU ms per request: {cpu}",
                        flush=True,
                    )
                    for sample in result.samples:
                        print(f"    non-accepted answer: {sample}")
            report.ledger_rows = ledger.recordings() - rows_before
            report.deliveries = ledger.deliveries() - deliveries_before
            published = published_count(stack)
            report.published = None if published is None else published - published_before
            reports.append(report)
        for server, _port in servers.values():
            if "Traceback" in server.log_path.read_text(errors="replace"):
                print(f"  warning: a traceback is in {server.name}'s log:\n{server.log_tail(30)}")
    return reports


def round_order(targets: Sequence[str], index: int) -> list[str]:
    """Round ``index``'s order: the targets rotated by one per round, so each takes each
    place in turn (two targets alternate)."""
    shift = index % len(targets)
    return [*targets[shift:], *targets[:shift]]


def cpu_per_request(
    before: dict[str, float], after: dict[str, float], requests: int
) -> dict[str, float]:
    """CPU ms per request by part between two ``cpu_snapshot``s; ``rest`` is the remainder."""
    if requests <= 0:
        return {}
    spent = {part: (after[part] - before[part]) * 1000 / requests for part in before}
    spent["rest"] = spent["total"] - spent["web"] - spent["relay"] - spent["load"]
    spent["total"] = spent.pop("total")
    return spent


def summarize(reports: Sequence[RouteReport], args: argparse.Namespace) -> bool:
    """Print the tables; True when every target is met."""
    print()
    print(
        f"receiver benchmark: {args.requests} requests/round x {args.rounds} rounds, "
        f"{args.concurrency} clients, gunicorn --workers {args.workers} --threads "
        f"{args.threads}, {os.cpu_count()} CPUs (medians over rounds)"
    )
    rows: list[list[Any]] = []
    for report in reports:
        for target in args.targets:
            results = report.of(target)
            rows.append(
                [
                    report.stack,
                    report.provider,
                    target,
                    median([r.rps for r in results]),
                    median([r.p50_ms for r in results]),
                    median([r.p99_ms for r in results]),
                    max((r.max_ms for r in results), default=math.nan),
                    sum(r.errors for r in results),
                    median([r.drain_s for r in results if not math.isnan(r.drain_s)]),
                ]
            )
    print_table(
        [
            "stack",
            "route",
            "target",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "relay drain s",
        ],
        rows,
    )
    print()
    ok = True
    verdicts: list[list[Any]] = []
    for report in reports:
        ratio = _rps_ratio(report, "callrec", "bare")
        p99 = median([r.p99_ms for r in report.of("callrec")])
        ratio_ok = ratio >= TARGET_RATIO
        p99_ok = p99 < TARGET_P99_MS
        counted = report.ledger_rows == report.callrec_accepted == report.deliveries
        errors_ok = sum(r.errors for r in report.rounds) == 0
        ok = ok and ratio_ok and p99_ok and counted and errors_ok
        at = "" if args.concurrency == TARGET_P99_CLIENTS else f" (at {TARGET_P99_CLIENTS} clients)"
        verdicts.append(
            [
                report.stack,
                report.provider,
                ratio,
                f">= {TARGET_RATIO}",
                "PASS" if ratio_ok else "MISS",
                p99,
                f"< {TARGET_P99_MS:g}{at}",
                "PASS" if p99_ok else "MISS",
                f"{report.ledger_rows}/{report.callrec_accepted}",
                "ok" if counted else "MISMATCH",
                report.published,
            ]
        )
    print_table(
        [
            "stack",
            "route",
            "callrec/bare",
            "target",
            "",
            "callrec p99 ms",
            "target",
            "",
            "ledger rows/accepted",
            "",
            "broker msgs",
        ],
        verdicts,
    )
    floors = [target for target in args.targets if target.startswith("floor")]
    if floors:
        print()
        print_table(
            ["stack", "route", "floor", "floor/bare", "callrec/floor", "floor p99 ms"],
            [
                [
                    report.stack,
                    report.provider,
                    floor,
                    _rps_ratio(report, floor, "bare"),
                    _rps_ratio(report, "callrec", floor),
                    median([r.p99_ms for r in report.of(floor)]),
                ]
                for report in reports
                for floor in floors
            ],
        )
    return ok


def _rps_ratio(report: RouteReport, target: str, baseline: str) -> float:
    """Median req/s of ``target`` over that of ``baseline`` (NaN without a baseline)."""
    base = median([r.rps for r in report.of(baseline)])
    return median([r.rps for r in report.of(target)]) / base if base > 0 else math.nan


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/receiver.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per measured round and server (default 6000; quick 300)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measured rounds per server, interleaved (default 3; quick 1)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="unmeasured requests per server first (default 300; quick 100)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument(
        "--stacks",
        default=",".join(STACKS),
        help=f"comma-separated, default all: {', '.join(STACKS)}",
    )
    parser.add_argument(
        "--providers",
        default=",".join(LOADS),
        help=f"routes to load, comma-separated, default all: {', '.join(LOADS)}",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn --workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn --threads (default 4)")
    parser.add_argument(
        "--load",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (default auto: wrk when installed)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (under a minute)")
    parser.add_argument(
        "--postgres-admin-url",
        default=DEFAULT_PG_ADMIN,
        help=f"a database to connect to for CREATE/DROP DATABASE (default {DEFAULT_PG_ADMIN})",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS,
        help=f"broker of postgres-redis (default {DEFAULT_REDIS})",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT_S,
        help="after each callrec round, how long to wait for the relay to "
        f"publish every new row (default {DRAIN_TIMEOUT_S:g} s)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run bench.floor_app's two floors (verify, parse, then one autocommitted "
        "INSERT per request, or one per group of concurrent requests)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args(argv)
    args.targets = ["bare", "callrec", *(["floor", "floor-batched"] if args.floor else [])]
    quick = args.quick
    args.requests = args.requests or (300 if quick else 6000)
    args.rounds = args.rounds or (1 if quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (100 if quick else 300)
    args.stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    for stack in args.stacks:
        if stack not in STACKS:
            parser.error(f"unknown stack {stack!r}")
    args.providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    for provider in args.providers:
        if provider not in LOADS:
            parser.error(f"unknown provider {provider!r} (known: {', '.join(LOADS)})")
    if min(args.requests, args.rounds, args.concurrency, args.workers, args.threads) < 1:
        parser.error("sizes must be >= 1")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (it also starts callrec's relay)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk") is not None)
    if args.load == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    busy = load > 0.5 * (os.cpu_count() or 1)
    note = " (the machine was busy in the last minute: expect noise)" if busy else ""
    print(
        f"load generator: {'wrk' if use_wrk else 'python processes'}; "
        f"load average {load:.2f}{note}",
        flush=True,
    )

    def _sigterm(_signo: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _sigterm)
    root = Path(tempfile.mkdtemp(prefix="callrec-bench-receiver-"))
    reports: list[RouteReport] = []
    try:
        for name in args.stacks:
            reports.extend(run_stack(name, args, root, use_wrk))
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if summarize(reports, args) else 1


if __name__ == "__main__":
    sys.exit(main())
