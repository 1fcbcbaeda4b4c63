"""The fault and hostile-input suite (issue 6, ``docs/RELIABILITY.md``): every test here is
named after its row R1-R26 of ``../shared/research/reliability.md`` and carries the ``faults``
marker, so ``pytest -m faults`` runs the suite alone. Every test here also runs under the
secrets/PII canary (R23, ``canary_plugin``): callrec at DEBUG, Sentry to a local receiver, and
a failure when a secret, signed URL or phone number reaches a log line or Sentry event."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.faults)
