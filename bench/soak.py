"""The chaos soak (issue 6): thousands of recordings of random bytes through webhooks and polls
while every fault is injected, on PostgreSQL + a private Redis (or RabbitMQ node) + moto S3.

The driver is the fault suite's (``tests/faults/chaos.py``, also run at a CI size by
``tests/faults/test_chaos.py``). This script starts moto in its own process, makes a fresh
PostgreSQL database, runs the plan and prints the tally line, the faults actually injected,
the time to drain and the duplicate-execution rate. Exit 0 only when the run is clean: 0 lost,
0 duplicate objects, 0 hash mismatches, 0 unexpected failures, ``verify`` clean, 0 open
multipart uploads, drained within the visibility timeout + 180 s of the last fault.

    python bench/soak.py                               # 10,000 recordings (hours on 2 cores)
    python bench/soak.py --recordings 2000 --rate 4    # ~15 minutes
    python bench/soak.py --broker rabbitmq --seed 7
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ManagedProcess, free_port, http_status, wait_until
from emulators.sandbox import fresh_postgres_database
from tests.faults.chaos import ChaosPlan, KiB, MiB, SizeBand, run_chaos
from tests.fixtures.servers import POSTGRES_URL

_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _bands(spec: str) -> tuple[SizeBand, ...]:
    """``LOW-HIGH:WEIGHT,…`` in KiB, e.g. ``64-8192:0.998,61440-61440:0.002``."""
    bands = []
    for part in spec.split(","):
        sizes, _, weight = part.partition(":")
        low, _, high = sizes.partition("-")
        bands.append(SizeBand(int(low) * KiB, int(high or low) * KiB, float(weight or 1)))
    return tuple(bands)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--recordings", type=int, default=10_000)
    add("--broker", choices=("redis", "rabbitmq"), default="redis")
    add("--rate", type=float, default=5.0, help="webhooks per second")
    add(
        "--sizes",
        default="1-64:0.02,64-8192:0.978,61440:0.002",
        help="size bands in KiB, LOW-HIGH:WEIGHT (log-uniform in a band)",
    )
    add("--download-mibps", type=float, default=8.0, help="per audio body; 0: unpaced")
    add("--poll-only", type=float, default=0.01, help="fraction announced only by the list API")
    add("--twice", type=float, default=0.01, help="fraction of webhooks sent twice")
    add("--gone", type=float, default=0.005, help="fraction removed before the webhook")
    add("--child-kill-every", type=float, default=2.0, help="seconds between pool-child kills")
    add("--child-kills", type=int, default=30, help="at least this many pool-child kills")
    add("--main-kills", type=int, default=3)
    add("--broker-restarts", type=int, default=2)
    add("--s3-outage", type=float, default=60.0, help="seconds of S3 blackhole")
    add("--workers", type=int, default=2)
    add("--concurrency", type=int, default=2)
    add("--task-time-limit", type=int, default=60)
    add("--seed", type=int, default=0)
    add("--keep", action="store_true", help="keep the run's folder (process logs)")
    return parser.parse_args(argv)


def plan_of(args: argparse.Namespace) -> ChaosPlan:
    limit = args.task_time_limit
    return ChaosPlan(
        recordings=args.recordings,
        sizes=_bands(args.sizes),
        rate=args.rate,
        broker=args.broker,
        poll_only=args.poll_only,
        twice=args.twice,
        gone=args.gone,
        child_kill_every=args.child_kill_every,
        child_kills=args.child_kills,
        main_kills=args.main_kills,
        broker_restarts=args.broker_restarts,
        s3_outage_seconds=args.s3_outage,
        workers=args.workers,
        concurrency=args.concurrency,
        download_rate=args.download_mibps * MiB or None,
        seed=args.seed,
        settings={
            "CALLREC_TASK_TIME_LIMIT_SECONDS": str(limit),
            "CALLREC_STUCK_AFTER_SECONDS": str(limit + 15),
            "CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS": str(limit + 30),
            "CALLREC_SWEEP_INTERVAL_SECONDS": "5",
            "CALLREC_RETRY_BASE_SECONDS": "1",
            "CALLREC_RETRY_MAX_SECONDS": "30",
            "CALLREC_HTTP_TIMEOUT_SECONDS": "15",
            "CALLREC_POLL_INTERVAL_SECONDS": "30",
            "CALLREC_POLL_LOOKBACK_SECONDS": "3600",
            "CALLREC_POLL_OVERLAP_SECONDS": "120",
        },
    )


@contextlib.contextmanager
def moto_process(folder: Path) -> Iterator[str]:
    """moto's S3 server in its own process (its objects live there, not in the driver)."""
    port = free_port()
    moto = ManagedProcess(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log_path=folder / "moto.log",
        env={**os.environ, **_FAKE_AWS},
        name="moto",
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{endpoint}/moto-api/") is not None, 60, 0.2, "moto")
        yield endpoint
    finally:
        moto.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update(_FAKE_AWS)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    folder = Path(tempfile.mkdtemp(prefix="callrec-soak-"))
    plan = plan_of(args)
    print(f"soak: folder {folder}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    with moto_process(folder) as endpoint, fresh_postgres_database(POSTGRES_URL) as database:
        report = run_chaos(plan, folder, database, endpoint)
    print("\n".join(["== soak ==", *report.lines()]))
    print(f"verdict: {'CLEAN' if report.clean else 'FAILED'}")
    for finding in (report.tally.details + report.tally.verify_problems)[:40]:
        print(f"  {finding}")
    if not args.keep and report.clean:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
