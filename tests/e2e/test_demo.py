"""``make demo`` (``python -m emulators.demo``) with ``--once``: real emulators and callrec
processes, signed webhooks, and recordings on disk where the demo says they are."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.callrec import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_demo_once_captures_recordings_to_disk_and_names_the_status_page(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "emulators.demo", "--once", "--port", "0", "--folder", folder],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    stored = re.findall(r"^  stored +(\w+) +(\d+) bytes  (\S+)$", done.stdout, re.MULTILINE)
    assert sorted(provider for provider, _, _ in stored) == ["telnyx"] * 3 + ["twilio"] * 3
    for _, size, path in stored:
        audio = Path(path)
        assert audio.is_relative_to(folder / "recordings") and audio.stat().st_size == int(size)
        assert audio.with_suffix(".json").is_file()  # the metadata record beside it
    assert re.search(r"^  failed +twilio .*ErrorCode 16101", done.stdout, re.MULTILINE)
    assert re.search(
        r"^Status page: http://127\.0\.0\.1:\d+/status +\(user 'demo', password 'demo'\)$",
        done.stdout,
        re.MULTILINE,
    )
