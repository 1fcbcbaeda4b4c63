"""Every fault together (issue 6's combined run), at a CI size; ``bench/soak.py`` runs the same
driver (``chaos.py``) at 10,000 recordings.

About 200 recordings of random bytes (1 KiB to 6 MiB, S3 multipart above 5 MiB) announced at
~8 per second to a PostgreSQL + private Redis + moto S3 stack with 2 workers, beat and the
relay: 2 % sent twice, 1 % only listed (the reconciler's poll must find them), 1 % removed from
the emulator first (they must end ``failed`` with a reason). Meanwhile: a pool-child SIGKILL
every 3 s, one main-worker SIGKILL (a new worker is started), one Redis ``kill -9`` and
restart, one 10 s S3 blackhole, all overlapping.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.chaos import ChaosPlan, KiB, MiB, SizeBand, run_chaos
from tests.fixtures.servers import fresh_postgres_database

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.s3,
    # A hang detector: the drain deadline alone is 194 s after the last fault.
    pytest.mark.timeout(420),
]

CI_PLAN = ChaosPlan(
    recordings=200,
    sizes=(SizeBand(KiB, 6 * MiB),),
    rate=8,
    poll_only=0.01,
    twice=0.02,
    gone=0.01,
    child_kill_every=3,
    child_kills=5,
    main_kills=1,
    broker_restarts=1,
    broker_down_seconds=1,
    s3_outage_seconds=10,
    drain_margin=180,
    seed=6,
    settings={
        "CALLREC_TASK_TIME_LIMIT_SECONDS": "8",
        "CALLREC_STUCK_AFTER_SECONDS": "10",
        "CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS": "14",
        "CALLREC_SWEEP_INTERVAL_SECONDS": "1",
        "CALLREC_RELAY_INTERVAL_SECONDS": "0.1",
        "CALLREC_POLL_INTERVAL_SECONDS": "10",
        "CALLREC_POLL_LOOKBACK_SECONDS": "600",
        "CALLREC_POLL_OVERLAP_SECONDS": "30",
    },
)


def test_all_faults_together_lose_and_duplicate_nothing(tmp_path: Path, moto_server: str) -> None:
    """0 lost, 0 duplicate objects, 0 hash mismatches, 0 open multipart uploads, every
    unavailable recording ``failed`` with a reason, ``verify`` clean, drained within the
    visibility timeout + 180 s of the last fault; and every fault was really injected."""
    for database in fresh_postgres_database():
        report = run_chaos(CI_PLAN, tmp_path, database, moto_server)
        print("\n".join(report.lines()))
        report.assert_clean()
        assert report.faults["child-kills"] >= CI_PLAN.child_kills
        assert report.faults["main-kills"] == CI_PLAN.main_kills
        assert report.faults["broker-restarts"] == CI_PLAN.broker_restarts
        assert report.faults["s3-outages"] == 1
        traffic = report.traffic
        assert traffic["poll-only"] == CI_PLAN.count(CI_PLAN.poll_only) > 0
        assert traffic["sent-twice"] == CI_PLAN.count(CI_PLAN.twice) > 0
        assert traffic["gone"] == report.tally.failed_with_reason > 0
