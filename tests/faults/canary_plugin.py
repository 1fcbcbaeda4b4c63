"""R23 as a pytest plugin (``tests/conftest.py`` registers it, so pytest-xdist's controller
adds up its workers' counts): every test under
``SCANNED_DIRS`` runs callrec at DEBUG with Sentry reporting to a session-wide local receiver,
and fails when a canary (``tests.faults.canary``) reaches a log line or a Sentry event.

Nothing is asked of the tests. While one runs (setup, call and teardown, so module-scoped
stacks too), every configuration built by ``tests.fixtures.callrec`` (``settings_from``,
``ServiceProcess``) gets ``CALLREC_LOG_LEVEL=debug`` and, unless it names its own,
``CALLREC_SENTRY_DSN`` of the session receiver; its secrets become canaries and each process's
log file is watched. In the pytest process, where tests serve the web app, the product's
redacting handler (``config.logging.redacting_handler``) records at DEBUG and the product's
Sentry set-up (``config.sentry.configure_sentry``) reports to the receiver, as in the web
process of a deployment. After the test (its function fixtures torn down, so its processes
stopped and flushed), everything new is scanned; a hit fails the test. What only module
fixtures' teardown writes is scanned after it and fails the session.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk

from config.logging import NOISY_LOGGERS, redacting_handler
from config.sentry import configure_sentry
from config.settings import load_settings
from tests.faults.canary import Hit, Scanner
from tests.fixtures import callrec
from tests.fixtures.callrec import ServiceProcess
from tests.fixtures.sentry import SentryReceiver

__all__ = [
    "pytest_runtest_protocol",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_testnodedown",
    "r23_canary",
]

SCANNED_DIRS: tuple[Path, ...] = (Path(__file__).parent,)
#: Loggers of the test harness in the pytest process (emulators, loopback and moto servers,
#: test code): the provider's side, not callrec's.
HARNESS_LOGGERS = ("emulators", "tests", "werkzeug", "moto", "faker", "asyncio", "filelock")
_KEY = pytest.StashKey["CanaryRun"]()
_TOTALS = pytest.StashKey["CanaryTotals"]()


def scanned(item: pytest.Item) -> bool:
    return any(directory in Path(item.path).parents for directory in SCANNED_DIRS)


class CanaryRun:
    """The session's receiver, scanner and counts; the ``RunObserver`` of the running test."""

    def __init__(self) -> None:
        self.scanner = Scanner()
        self.receiver = SentryReceiver().start()
        self._receivers: list[tuple[SentryReceiver, list[int]]] = [(self.receiver, [0])]
        self._inprocess = io.StringIO()
        self._inprocess_scanned = 0
        self.late_hits: list[tuple[str, Hit]] = []
        self.tests = 0
        self.hits = 0

    # -- RunObserver --------------------------------------------------------------------------
    def settings(self, env: Mapping[str, str]) -> Mapping[str, str]:
        self.scanner.canaries.add_env(env)
        extra = {"CALLREC_LOG_LEVEL": "debug"}
        if not env.get("CALLREC_SENTRY_DSN"):
            extra["CALLREC_SENTRY_DSN"] = self.receiver.dsn
        return extra

    def started(self, process: ServiceProcess) -> None:
        self.scanner.watch(process.log_path)

    # -- scanning -----------------------------------------------------------------------------
    def watch_receiver(self, receiver: SentryReceiver) -> None:
        if all(receiver is not known for known, _ in self._receivers):
            self._receivers.append((receiver, [0]))

    def scan(self) -> list[Hit]:
        """Everything written or received since the last scan."""
        if sentry_sdk.get_client().is_active():
            sentry_sdk.flush(timeout=5)
        hits = self.scanner.scan_files()
        text = self._inprocess.getvalue()
        complete = text[: text.rfind("\n") + 1]
        new = complete[self._inprocess_scanned :]
        first_line = complete[: self._inprocess_scanned].count("\n") + 1
        hits += self.scanner.scan_text(new, "in-process log", first_line)
        self._inprocess_scanned = len(complete)
        for number, (receiver, done) in enumerate(self._receivers):
            envelopes = list(receiver.raw)[done[0] :]
            name = "session Sentry" if number == 0 else f"test's Sentry receiver {number}"
            hits += self.scanner.scan_envelopes(envelopes, name, done[0])
            done[0] += len(envelopes)
        self.hits += len(hits)
        return hits

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        """Observe callrec's configurations, log in-process at DEBUG, report to Sentry."""
        callrec.observers.append(self)
        try:
            with _inprocess_logging(self._inprocess), _inprocess_sentry(self.receiver.dsn):
                yield
        finally:
            callrec.observers.remove(self)

    def counts(self) -> dict[str, int]:
        scanner = self.scanner
        return {
            "lines": scanner.lines,
            "events": scanner.events,
            "envelopes": scanner.envelopes,
            "tests": self.tests,
            "canaries": len(scanner.canaries),
            "hits": self.hits,
        }


class CanaryTotals:
    """What every process of the session scanned (one, or each pytest-xdist worker)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.late_hits: list[str] = []

    def add(self, counts: Mapping[str, int], late_hits: list[str]) -> None:
        self.counts.update(counts)
        self.late_hits += late_hits

    def summary(self) -> str:
        c = self.counts
        return (
            f"R23 canary scan: {c['lines']} log lines, {c['events']} sentry events "
            f"({c['envelopes']} envelopes) of {c['tests']} tests, "
            f"{c['canaries']} canary values, {c['hits']} hits"
        )


def _not_harness(record: logging.LogRecord) -> bool:
    return not record.name.startswith(HARNESS_LOGGERS)


@contextlib.contextmanager
def _inprocess_logging(stream: io.StringIO) -> Iterator[None]:
    """The product's redacting JSON handler on the root logger at DEBUG, libraries quieted as
    ``configure_logging`` does; levels restored afterwards."""
    root = logging.getLogger()
    handler = redacting_handler(stream, "json")
    handler.filters.insert(0, _not_harness)
    saved = {name: logging.getLogger(name).level for name in ("", *NOISY_LOGGERS)}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _inprocess_sentry(dsn: str) -> Iterator[None]:
    """The web process's Sentry set-up in the pytest process; off again afterwards."""
    configure_sentry(load_settings({"CALLREC_SENTRY_DSN": dsn}), "web")
    try:
        yield
    finally:
        client = sentry_sdk.get_client()
        client.flush(timeout=5)
        client.close()
        sentry_sdk.get_global_scope().set_client(None)


def _run(config: pytest.Config) -> CanaryRun:
    run = config.stash.get(_KEY, None)
    if run is None:
        run = config.stash[_KEY] = CanaryRun()
    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    if not scanned(item):
        return (yield)
    run = _run(item.config)
    run.tests += 1
    with run.around():
        result = yield
    run.late_hits += [(item.nodeid, hit) for hit in run.scan()]
    return result


@pytest.fixture(autouse=True)
def r23_canary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when a canary reached a log line or Sentry event during it."""
    run = request.config.stash.get(_KEY, None)
    if run is None or not scanned(request.node):
        yield
        return
    if "sentry_receiver" in request.fixturenames:
        run.watch_receiver(request.getfixturevalue("sentry_receiver"))
    yield
    hits = run.scan()
    if hits:
        listed = "\n".join(f"  {hit}" for hit in hits[:30])
        pytest.fail(f"R23: {len(hits)} canary hit(s) in logs/Sentry:\n{listed}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(_KEY, None)
    if run is not None:
        run.late_hits += [("session end", hit) for hit in run.scan()]
        run.receiver.stop()
        totals = session.config.stash.setdefault(_TOTALS, CanaryTotals())
        totals.add(run.counts(), [f"{nodeid}: {hit}" for nodeid, hit in run.late_hits])
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports the totals
            workeroutput["r23"] = {"counts": run.counts(), "late_hits": totals.late_hits}
    totals = session.config.stash.get(_TOTALS, None)
    if totals is not None and totals.late_hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: add up what one worker scanned."""
    report = getattr(node, "workeroutput", {}).get("r23")
    if report is not None:
        totals = node.config.stash.setdefault(_TOTALS, CanaryTotals())
        totals.add(report["counts"], report["late_hits"])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    totals = terminalreporter.config.stash.get(_TOTALS, None)
    if totals is None:
        return
    terminalreporter.write_line(totals.summary())
    for hit in totals.late_hits[:30]:
        terminalreporter.write_line(f"  R23 hit after {hit}", red=True)
