"""CPU per recording of the capture path alone: ``capture()`` in a loop, in this process.

The Telnyx emulator and moto S3 each run in their own process (``bench/emulator_child.py``), the
ledger is a fresh SQLite file (``--stack embedded``) or PostgreSQL database (``--stack
pg-rabbitmq``; no broker is used), logging and metrics are configured as the worker's. N rows
are accepted up front, then ``capture(runtime, id)`` runs once per row, as one Celery pool
process would run them one after another, without Celery. Printed: CPU ms per recording
(user+sys of this process, robust on a busy machine), wall ms, and with ``--profile`` the top
functions of a cProfile of the loop.

    python bench/capture_loop.py --recordings 200
    python bench/capture_loop.py --stack pg-rabbitmq --recordings 200 --profile /tmp/loop.prof
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from bench.capture import Bench, _cpu_of  # noqa: E402
from bench.stack import STACKS, BenchStack, load_note  # noqa: E402


def _run(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    from config.logging import configure_logging
    from config.settings import load_settings
    from ledger import accept_refs
    from providers.base import RecordingRef
    from workers.capture import capture
    from workers.runtime import build_runtime

    telnyx, bodies = stack.start_telnyx(args.recordings, args.size)
    stack.env.update(dict(item.split("=", 1) for item in args.env))
    os.environ.update(stack.env)  # boto3 reads the fake credentials from the environment
    settings = load_settings(stack.env)
    log = (stack.workdir / "loop.log").open("a")
    saved_stderr = os.dup(2)
    os.dup2(log.fileno(), 2)  # the worker's log lines go to a file, as a worker's would
    try:
        configure_logging(settings.log_level, settings.log_format)
        start_cpu = time.process_time()
        runtime = build_runtime(settings, lambda *_args: None)
        keys = [line.split("\t", 1)[0] for line in bodies.read_text().splitlines()]
        accepted = accept_refs(
            runtime.sessions,
            "telnyx",
            "default",
            [RecordingRef(recording_id=k) for k in keys],
            source="list",
        )
        ids = accepted.new_ids
        # Warm up: the first capture pays imports, connections and the S3 client's set-up.
        runtime_cpu = time.process_time() - start_cpu
        first_cpu = time.process_time()
        warm = [capture(runtime, i).state for i in ids[:1]]
        first_cpu = time.process_time() - first_cpu
        warm += [capture(runtime, i).state for i in ids[1 : args.warmup]]
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        states = [capture(runtime, i).state for i in ids[args.warmup :]]
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        runtime.close()
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        log.close()
    measured = len(states)
    return {
        "stored": (warm + states).count("stored"),
        "measured": measured,
        "cpu_ms": 1000 * cpu / max(measured, 1),
        "wall_ms": 1000 * wall / max(measured, 1),
        "runtime_ms": 1000 * runtime_cpu,
        "first_ms": 1000 * first_cpu,
        "emulator_requests": stack.bench.query(telnyx, "stats")["requests"],
        "moto_cpu_ms": 1000 * _cpu_of(stack.servers["moto"].process.pid) / len(warm + states),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/capture_loop.py", description=__doc__)
    parser.add_argument("--stack", choices=STACKS, default="embedded")
    parser.add_argument("--recordings", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10, help="captures before measuring (>= 1)")
    parser.add_argument("--size", type=int, default=100 * 1024)
    parser.add_argument("--profile", help="write a cProfile of the measured loop here")
    parser.add_argument("--top", type=int, default=40, help="functions printed from the profile")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE, repeatable")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    print(load_note())
    bench = Bench(None)
    try:
        stack = BenchStack.open(args.stack, bench)
        try:
            result = _run(stack, args)
        finally:
            stack.close()
    finally:
        if not args.keep:
            bench.close()
        else:
            print(f"kept {bench.tmp}")
    print(
        f"{args.stack}: stored {result['stored']}/{args.recordings}; measured "
        f"{result['measured']}: {result['cpu_ms']:.1f} ms CPU and {result['wall_ms']:.1f} ms wall"
        " per recording"
    )
    print(
        f"build_runtime {result['runtime_ms']:.0f} ms CPU, first capture {result['first_ms']:.0f}"
        " ms CPU (a pool process pays both once, on its first task)"
    )
    print(f"moto CPU {result['moto_cpu_ms']:.1f} ms per recording (start-up included)")
    print(f"emulator requests: {result['emulator_requests']}")
    print(load_note())
    if args.profile:
        import pstats

        stats = pstats.Stats(args.profile)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
    return 0 if result["stored"] == args.recordings else 1


if __name__ == "__main__":
    raise SystemExit(main())
