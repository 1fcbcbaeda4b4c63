"""Burst benchmark: 1,000 VOXO recordings appear at once, audio URLs valid 60 s.

VOXO sends no webhooks (``providers/voxo.py``): recordings reach callrec only through the
reconciler. Per stack (``embedded``, ``pg-rabbitmq``; both store to moto S3), the VOXO emulator
(own process) lists ``--recordings`` recorded calls of the last hour from the start; callrec's
beat schedules a poll (``CALLREC_POLL_INTERVAL_SECONDS=10``), the poll lists them all in one
window and commits and publishes one row each, and the worker(s) capture each with a URL
fetched right before its download (a URL that expires mid-download is fetched again).

Reported: rows listed, stored (target: all), failed with their reasons, the time to drain
(first row listed → last ``stored_at``, and from beat's start), URL fetches and refreshes (from
the emulator's request log and the worker log), media requests refused as expired, and the
worker's CPU and peak RSS. Every stored row must carry the emulator's sha256.

    python bench/burst.py                              # both stacks, 1000 x 100 KiB, 60 s URLs
    python bench/burst.py --stack embedded --recordings 200 --url-ttl 5

Exit status: 0 all stored, 1 some not, 2 the benchmark failed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.capture import Bench, BenchError
from bench.common import print_table, wait_until
from bench.stack import (
    BenchStack,
    Usage,
    add_stack_options,
    load_note,
    read_stack_options,
    run_stacks,
)

KIB = 1024
POLL_INTERVAL_S = 10  # the smallest allowed: beat checks every 2 s


@dataclass
class Burst:
    stack: str
    listed: int = 0
    stored: int = 0
    wrong_hash: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    drain_s: float = math.nan  # first row listed → last stored
    from_beat_s: float = math.nan  # beat started → last stored
    url_fetches: int = 0
    attempts: int = 0
    refreshes_logged: int = 0
    media_expired: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    worker: Usage = field(default_factory=Usage)

    @property
    def rate(self) -> float:
        return self.stored / self.drain_s if self.drain_s > 0 else math.nan


def run_stack(kind: str, bench: Bench, args: argparse.Namespace) -> Burst:
    result = Burst(kind)
    stack = BenchStack.open(
        kind,
        bench,
        pg_admin=args.postgres_admin_url,
        amqp_url=args.amqp_url,
        CALLREC_POLL_INTERVAL_SECONDS=str(POLL_INTERVAL_S),
    )
    try:
        emulator = stack.start_server(
            "voxo",
            [
                "voxo",
                "--count",
                str(args.recordings),
                "--size",
                str(args.size),
                "--url-ttl",
                str(args.url_ttl),
            ],
        )
        ready = emulator.ready
        stack.env.update(
            CALLREC_VOXO_API_BASE=ready["base_url"],
            CALLREC_VOXO_EMAIL=ready["email"],
            CALLREC_VOXO_PASSWORD=ready["password"],
            CALLREC_VOXO_TENANT_ID=str(ready["tenant_id"]),
            CALLREC_VOXO_AUDIO_HOSTS=ready["audio_host"],
        )
        stack.start_relay()
        stack.start_workers(args.worker_options)
        print(f"[{kind}] {args.recordings} VOXO recordings listed; beat starts ({load_note()})")
        began = time.time()
        stack.start_beat()
        last = [time.monotonic()]

        def drained() -> bool:
            counts = stack.state_counts()
            if time.monotonic() - last[0] > 15:
                last[0] = time.monotonic()
                print(f"[{kind}]   {dict(counts)} after {time.time() - began:.0f}s", flush=True)
            for name, process in stack.processes.items():
                if not process.alive():
                    raise BenchError(f"{name} died:\n{process.log_tail(30)}")
            return counts["stored"] + counts["failed"] >= args.recordings

        wait_until(drained, args.timeout, 0.25, "every listed recording to be final")
        result.worker = stack.usage("worker")
        result.requests = bench.query(emulator, "stats")["requests"]
        for name in list(stack.processes):
            stack.stop(name)
        rows = stack.rows()
        result.listed = len(rows)
        stored = [r for r in rows if r.state == "stored" and r.stored_at is not None]
        result.stored = len(stored)
        result.wrong_hash = sum(1 for r in stored if r.sha256 != ready["sha256"].get(r.key))
        result.failed = Counter(r.last_error or "?" for r in rows if r.state == "failed")
        result.attempts = sum(r.attempts for r in rows)
        if stored:
            last_stored = max(r.stored_at.timestamp() for r in stored if r.stored_at)
            result.drain_s = last_stored - min(r.created_at.timestamp() for r in rows)
            result.from_beat_s = last_stored - began
        result.url_fetches = sum(
            n for k, n in result.requests.items() if k == "GET /call-recordings 200"
        )
        result.media_expired = sum(
            n for k, n in result.requests.items() if k.startswith("GET /media 403")
        )
        result.refreshes_logged = stack.log_count("worker", "fetching a fresh URL")
        if stack.tracebacks():
            print(f"[{kind}] tracebacks in: {', '.join(stack.tracebacks())}")
    finally:
        if args.keep:
            print(f"[{kind}] logs in {stack.workdir}")
        stack.close()
    return result


def summarize(results: Sequence[Burst], args: argparse.Namespace) -> bool:
    print()
    print(
        f"burst benchmark: {args.recordings} VOXO recordings x {args.size / KIB:g} KiB at once, "
        f"URLs valid {args.url_ttl:g} s, {args.worker_options.describe()}; {load_note()}"
    )
    print_table(
        [
            "stack",
            "listed",
            "stored",
            "failed",
            "drain s",
            "from beat s",
            "rec/s",
            "URL fetches",
            "attempts",
            "URL refreshes",
            "media 403",
            "worker CPU s",
            "worker RSS MiB (sum)",
            "",
        ],
        [
            [
                r.stack,
                r.listed,
                r.stored,
                sum(r.failed.values()),
                r.drain_s,
                r.from_beat_s,
                r.rate,
                r.url_fetches,
                r.attempts,
                r.refreshes_logged,
                r.media_expired,
                r.worker.cpu_s,
                r.worker.peak_rss_kib / KIB,
                "PASS" if r.stored == args.recordings and not r.wrong_hash else "MISS",
            ]
            for r in results
        ],
    )
    ok = True
    for r in results:
        print(f"[{r.stack}] emulator requests: {r.requests}")
        for reason, count in r.failed.most_common():
            print(f"[{r.stack}] failed x{count}: {reason}")
        if r.wrong_hash:
            print(f"[{r.stack}] PROBLEM: {r.wrong_hash} stored rows with a wrong sha256")
        ok = ok and r.stored == args.recordings and not r.wrong_hash
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/burst.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--recordings", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("--size", type=int, default=100 * KIB, help="bytes (default 102400)")
    parser.add_argument("--url-ttl", type=float, default=60.0, help="audio URL lifetime, s")
    parser.add_argument("--timeout", type=float, default=None, help="default 120 + N")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    read_stack_options(parser, args)
    if min(args.recordings, args.size) < 1:
        parser.error("sizes must be >= 1")
    args.timeout = args.timeout or 120 + args.recordings
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_stacks(parse_args(argv), run_stack, summarize)


if __name__ == "__main__":
    sys.exit(main())
