"""Prometheus metrics, safe across processes (gunicorn workers, Celery prefork children).

With ``CALLREC_METRICS_DIR`` set (the default, ``./var/metrics``) every process of a host writes
its counters and histograms to memory-mapped files there (prometheus_client's multiprocess
mode); a scrape merges the files of every process. When a process configures metrics, the
files of processes that are gone are folded into one archive file per type and deleted, so the
directory stays small and totals never go backwards. Empty: each process keeps its own numbers
in memory.

Label values are bounded: ``provider`` and ``account`` are configured accounts (the webhook
view labels anything else ``unknown``), reasons come from the fixed sets below. Never ids, URLs
or phone numbers.

Ledger-derived series (backlog by state, oldest pending age, expected but missing) are not
counters: :class:`LedgerCollector` computes them with two grouped queries at scrape time.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings

__all__ = [
    "CAPTURE_FAILURE_REASONS",
    "UNKNOWN",
    "WEBHOOK_REJECT_REASONS",
    "LedgerCollector",
    "Metrics",
    "configure_metrics",
    "metrics",
    "scrape",
    "start_worker_exporter",
]

UNKNOWN = "unknown"

#: Why a webhook got no 2xx (the label ``reason`` of ``callrec_webhooks_rejected_total``).
WEBHOOK_REJECT_REASONS = frozenset(
    {
        "unknown_account",  # 404: no such provider or account in the path
        "signature",  # 401
        "payload",  # 400
        "media_type",  # 415
        "not_offered",  # 404: a polled-only provider
        "too_large",  # 413
        "not_configured",  # 503: no key to verify with
        "ledger_unavailable",  # 503: not committed, the provider retries
    }
)

#: Why a recording ended ``failed`` (the label ``reason`` of ``callrec_captures_failed_total``).
CAPTURE_FAILURE_REASONS = frozenset(
    {
        "credentials",  # the API refused the account's credentials
        "not_found",  # the provider has no such recording (or it is gone)
        "unavailable",  # the provider says it will never have audio (absent, failed, deleted)
        "size",  # larger than CALLREC_MAX_RECORDING_BYTES, or sizes that never agree
        "conflict",  # a different object already exists under the key
        "refused_host",  # audio URL outside the account's allowed hosts
        "attempts_exhausted",  # CALLREC_MAX_ATTEMPTS transient failures
        "permanent",  # any other permanent failure
    }
)

#: Histogram buckets of the time from the provider's event to the stored object, in seconds.
EVENT_TO_STORED_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400)

_PID_FILE = re.compile(r"_(\d+)\.db$")


class Metrics:
    """The counters and histograms every process may update (one set per configuration)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        pa = ("provider", "account")
        self.webhooks_received = self._counter(
            "callrec_webhooks_received", "Webhook requests received.", pa
        )
        self.webhooks_accepted = self._counter(
            "callrec_webhooks_accepted",
            "Webhooks answered 2xx after the ledger commit, by result (accepted, duplicate, "
            "ignored).",
            (*pa, "result"),
        )
        self.webhooks_rejected = self._counter(
            "callrec_webhooks_rejected", "Webhooks refused, by reason.", (*pa, "reason")
        )
        self.captures_started = self._counter(
            "callrec_captures_started", "Capture attempts started (a claim taken).", pa
        )
        self.captures_stored = self._counter(
            "callrec_captures_stored", "Recordings stored (audio and record written).", pa
        )
        self.captures_failed = self._counter(
            "callrec_captures_failed", "Recordings that ended failed, by reason.", (*pa, "reason")
        )
        self.captures_verified = self._counter(
            "callrec_captures_verified",
            "Stored recordings whose object storage confirmed the bytes that were hashed: "
            "the conditional create's answer (S3: Content-MD5 checked, ETag compared), or a "
            "stat with that size for an earlier attempt's object.",
            pa,
        )
        self.bytes_stored = self._counter("callrec_stored_bytes", "Audio bytes stored.", pa)
        self.url_refreshes = self._counter(
            "callrec_url_refreshes",
            "Fresh audio URLs fetched within an attempt after an expired or cut download.",
            pa,
        )
        self.rate_limited = self._counter(
            "callrec_rate_limited",
            "HTTP 429s from a provider's API that callrec waited out (the row or the account "
            "paused), by where they happened (capture, poll).",
            (*pa, "during"),
        )
        self.event_to_stored = Histogram(
            "callrec_event_to_stored_seconds",
            "Time from the provider's event (the recording's end, else its acceptance) to the "
            "stored object.",
            pa,
            buckets=EVENT_TO_STORED_BUCKETS,
            registry=self.registry,
        )

    def _counter(self, name: str, help_text: str, labels: tuple[str, ...]) -> Counter:
        return Counter(name, help_text, labels, registry=self.registry)

    # -- the events ---------------------------------------------------------------------------

    def webhook_rejected(self, provider: str, account: str, reason: str) -> None:
        self.webhooks_rejected.labels(
            provider, account, _bounded(reason, WEBHOOK_REJECT_REASONS)
        ).inc()

    def capture_failed(self, provider: str, account: str, reason: str) -> None:
        self.captures_failed.labels(
            provider, account, _bounded(reason, CAPTURE_FAILURE_REASONS)
        ).inc()

    def capture_stored(self, provider: str, account: str, size: int, seconds: float) -> None:
        self.captures_stored.labels(provider, account).inc()
        self.bytes_stored.labels(provider, account).inc(size)
        self.event_to_stored.labels(provider, account).observe(max(0.0, seconds))


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


class _State:
    directory: str | None = None
    current: Metrics | None = None


def configure_metrics(settings: Settings) -> Metrics:
    """Make this process write metrics to ``CALLREC_METRICS_DIR`` (idempotent per directory).

    Called at process start (web app, worker runtime); a fork afterwards is handled by
    prometheus_client (files are per pid). Removes the files of processes that are gone.
    """
    directory = settings.metrics_dir
    if _State.current is not None and directory == _State.directory:
        return _State.current
    values.close_all_multiprocess_files()  # the previous configuration's (tests reconfigure)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        remove_dead_process_files(directory)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        values.ValueClass = values.MultiProcessValue()
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        values.ValueClass = values.MutexValue
    _State.directory, _State.current = directory, Metrics()
    return _State.current


def metrics() -> Metrics:
    """This process's metrics (in memory until :func:`configure_metrics` names a directory)."""
    if _State.current is None:
        _State.current = Metrics()
    return _State.current


def remove_dead_process_files(directory: str) -> int:
    """Fold the counters and histograms of pids that no longer run into ``<type>_archive.db``
    (so totals never go backwards when a process exits), then delete their files; return how
    many files were removed. Serialised by a lock file: processes start concurrently."""
    root = Path(directory)
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dead = [path for path in sorted(root.glob("*.db")) if _dead(path)]
        for kind in ("counter", "histogram"):
            sources = [path for path in dead if path.name.startswith(kind + "_")]
            if sources:
                _fold(root / f"{kind}_archive.db", sources)
        for path in dead:
            path.unlink(missing_ok=True)
    return len(dead)


def _dead(path: Path) -> bool:
    match = _PID_FILE.search(path.name)
    return match is not None and not _alive(int(match.group(1)))


def _fold(archive: Path, sources: list[Path]) -> None:
    """Write ``archive`` + ``sources`` summed into ``archive`` (replaced atomically; the
    temporary file is not ``*.db``, so a scrape never reads it)."""
    files = [str(path) for path in (archive, *sources) if path.exists()]
    merged = MultiProcessCollector.merge(files, accumulate=False)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    out = MmapedDict(str(partial))
    try:
        for metric in merged:
            for sample in metric.samples:
                labels = sample.labels
                key = mmap_key(
                    metric.name,
                    sample.name,
                    list(labels),
                    list(labels.values()),
                    metric.documentation,
                )
                out.write_value(key, sample.value, 0.0)
    finally:
        out.close()
    os.replace(partial, archive)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scrape(settings: Settings, *extra: Collector) -> bytes:
    """The text exposition of every process's metrics (the directory) plus ``extra``."""
    registry = CollectorRegistry()
    if settings.metrics_dir and _State.directory == settings.metrics_dir:
        MultiProcessCollector(registry, path=settings.metrics_dir)
    else:
        registry.register(_RegistryCollector(metrics().registry))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


def start_worker_exporter(settings: Settings) -> Any:
    """Serve the metrics directory on ``127.0.0.1:CALLREC_WORKER_METRICS_PORT`` from a thread
    of the worker's main process (for hosts without a web process); None when off."""
    if not settings.worker_metrics_port or not settings.metrics_dir:
        return None
    Path(settings.metrics_dir).mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=settings.metrics_dir)
    server, _thread = start_http_server(
        settings.worker_metrics_port, addr="127.0.0.1", registry=registry
    )
    return server


class _RegistryCollector(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self._registry.collect()


class LedgerCollector(Collector):
    """Gauges read from the ledger at scrape time.

    ``callrec_ledger_backlog{state}`` and ``callrec_ledger_oldest_pending_age_seconds``: one
    grouped query over the rows that are not final (``state`` is indexed). Completeness: one
    grouped query over recording rows, ``callrec_recordings{stage}`` (announced, stored,
    failed) and ``callrec_recordings_missing`` (announced more than
    ``CALLREC_METRICS_MISSING_AFTER_MINUTES`` ago and not stored).
    """

    def __init__(self, sessions: sessionmaker[Session], missing_after_minutes: int) -> None:
        self._sessions = sessions
        self._missing_after = timedelta(minutes=missing_after_minutes)

    def collect(self) -> Iterator[Any]:
        from ledger.models import FINAL_STATES, Recording, State, utcnow

        now = utcnow()
        labels = ["provider", "account"]
        backlog = GaugeMetricFamily(
            "callrec_ledger_backlog", "Ledger rows not final, by state.", labels=[*labels, "state"]
        )
        oldest = GaugeMetricFamily(
            "callrec_ledger_oldest_pending_age_seconds",
            "Age of the oldest ledger row that is not final.",
            labels=labels,
        )
        recordings = GaugeMetricFamily(
            "callrec_recordings",
            "Recordings in the ledger by stage: announced (every row), stored, failed.",
            labels=[*labels, "stage"],
        )
        missing = GaugeMetricFamily(
            "callrec_recordings_missing",
            "Recordings announced or listed longer ago than CALLREC_METRICS_MISSING_AFTER_MINUTES "
            "and not stored.",
            labels=labels,
        )
        r = Recording
        cutoff = now - self._missing_after
        with self._sessions() as session:
            pending = session.execute(
                select(r.provider, r.account, r.state, func.count(), func.min(r.created_at))
                .where(r.state.not_in(FINAL_STATES))
                .group_by(r.provider, r.account, r.state)
            ).all()
            totals = session.execute(
                select(
                    r.provider,
                    r.account,
                    func.count(),
                    func.sum(case((r.state == State.STORED, 1), else_=0)),
                    func.sum(case((r.state == State.FAILED, 1), else_=0)),
                    func.sum(
                        case(((r.state != State.STORED) & (r.created_at < cutoff), 1), else_=0)
                    ),
                )
                .where(r.kind == "recording")
                .group_by(r.provider, r.account)
            ).all()
        ages: dict[tuple[str, str], float] = {}
        for provider, account, state, count, first in pending:
            backlog.add_metric([provider, account, state], count)
            age = (now - first).total_seconds() if first is not None else 0.0
            ages[(provider, account)] = max(age, ages.get((provider, account), 0.0))
        for (provider, account), age in sorted(ages.items()):
            oldest.add_metric([provider, account], age)
        for provider, account, count, stored, failed, late in totals:
            for stage, value in (("announced", count), ("stored", stored), ("failed", failed)):
                recordings.add_metric([provider, account, stage], value or 0)
            missing.add_metric([provider, account], late or 0)
        yield from (backlog, oldest, recordings, missing)
