"""The hypothesis settings of the hostile-input suite: reproducible and bounded in CI.

``derandomize=True`` draws the same examples on every run (no example database either), so a CI
failure replays locally; ``max_examples`` is set per test to keep the suite inside its time
budget. Used as a decorator (``@hostile(50)``), never loaded as the global profile, so other
tests' hypothesis settings are untouched.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

__all__ = ["PROFILE", "CaseCounter", "hostile"]

PROFILE = "callrec-hostile"
settings.register_profile(
    PROFILE,
    derandomize=True,
    database=None,
    deadline=None,  # requests over loopback on a loaded machine: no per-example deadline
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def hostile(max_examples: int) -> settings:
    """The suite's profile with ``max_examples`` examples."""
    return settings(settings.get_profile(PROFILE), max_examples=max_examples)


class CaseCounter:
    """Cases sent per (row, route), written to the terminal when the module ends."""

    def __init__(self) -> None:
        self.cases: Counter[tuple[str, str]] = Counter()

    def add(self, row: str, route: str) -> None:
        self.cases[(row, route)] += 1

    def report(self, config: pytest.Config, title: str) -> None:
        lines = [f"{row} {route}: {n} cases" for (row, route), n in sorted(self.cases.items())]
        total = sum(self.cases.values())
        text = "\n".join([f"{title}: {total} cases", *("  " + line for line in lines)])
        capture = config.pluginmanager.get_plugin("capturemanager")
        if capture is None:  # pragma: no cover - pytest run with -p no:capture
            print(text)
            return
        with capture.global_and_fixture_disabled():
            print("\n" + text)
