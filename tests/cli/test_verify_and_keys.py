"""``callrec verify`` (ledger vs storage, disk and S3) and ``callrec keys``."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from callrec_cli import main
from ledger import claim
from ledger.models import utcnow
from storage import recording_key
from tests.fixtures.callrec import base_env
from tests.fixtures.seeded import LEASE, Seeded


def _problems(output: str) -> list[tuple[str, str]]:
    kinds = ("missing", "extra", "size", "sha256", "metadata")
    return sorted(
        (line.split()[0], line.split()[1]) for line in output.splitlines() if line.startswith(kinds)
    )


def test_verify_clean_range(seeded: Seeded) -> None:
    for n in range(5):
        seeded.stored(f"rec-{n}", data=b"x" * (1000 + n))
    seeded.stored("has/odd id?", provider="twilio")  # percent-encoded in its key
    seeded.stored("x" * 300, account="east")  # an id too long for a key: hashed (h-…)
    seeded.failed("rec-failed", "HTTP 404")
    result = seeded.run("verify")
    assert result.exit_code == 0, result.output
    assert "verified 7 stored rows and 14 objects" in result.output
    assert "all consistent" in result.output


def test_verify_reports_each_kind_of_problem(seeded: Seeded) -> None:
    seeded.stored("rec-ok")
    missing = seeded.stored("rec-missing", write_audio=False, write_record=False)
    size = seeded.stored("rec-size", data=b"12345", ledger_size=6)
    sha = seeded.stored(
        "rec-sha", data=b"12345", ledger_sha256=hashlib.sha256(b"54321").hexdigest()
    )
    no_record = seeded.stored("rec-no-record", write_record=False)
    extra = recording_key("telnyx", "default", "never-accepted", "mp3")
    seeded.storage.write(extra, [b"stray"], content_type="audio/mpeg")
    # A capture in flight (row fetching, object written, not yet stored) is not extra.
    in_flight = seeded.accept("rec-in-flight")
    assert claim(seeded.sessions, in_flight, LEASE) is not None
    flying = recording_key("telnyx", "default", "rec-in-flight", "mp3")
    seeded.storage.write(flying, [b"half-way"], content_type="audio/mpeg")

    result = seeded.run("verify")
    assert result.exit_code == 1, result.output
    assert _problems(result.output) == sorted(
        [
            ("missing", missing),
            ("size", size),
            ("sha256", sha),
            ("metadata", no_record.removesuffix(".mp3") + ".json"),
            ("extra", extra),
        ]
    )
    assert "5 problem(s)" in result.output


def test_verify_filters_by_provider_account_and_time(seeded: Seeded) -> None:
    seeded.stored("rec-ok")
    missing = seeded.stored("rec-east", account="east", write_audio=False, write_record=False)
    stray = recording_key("twilio", "default", "RE-stray", "wav")
    seeded.storage.write(stray, [b"stray"], content_type="audio/wav")

    only_default = seeded.run("verify", "--provider", "telnyx", "--account", "default")
    assert only_default.exit_code == 0, only_default.output
    east = seeded.run("verify", "--provider", "telnyx", "--account", "east")
    assert east.exit_code == 1 and _problems(east.output) == [("missing", missing)]
    twilio = seeded.run("verify", "--provider", "twilio")
    assert twilio.exit_code == 1 and _problems(twilio.output) == [("extra", stray)]
    later = (utcnow() + timedelta(hours=1)).isoformat()
    future = seeded.run("verify", "--since", later)
    assert future.exit_code == 0 and "verified 0 stored rows" in future.output
    earlier = (utcnow() - timedelta(hours=1)).isoformat()
    window = seeded.run("verify", "--since", earlier, "--until", later)
    assert window.exit_code == 1 and len(_problems(window.output)) == 2


def test_keys_prints_urls_and_which_secrets_are_set_never_values(tmp_path: Path) -> None:
    secrets = {
        "CALLREC_TELNYX_API_KEY": "KEY-telnyx-secret-value",
        "CALLREC_TWILIO_ACCOUNT_SID": "AC0123456789abcdef",
        "CALLREC_TWILIO_AUTH_TOKEN": "twilio-token-secret-value",
        "TELNYX_EAST_KEY": "KEY-east-secret-value",
    }
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[[accounts]]\nprovider = "telnyx"\nname = "east"\n'
        'credentials = { api_key_env = "TELNYX_EAST_KEY" }\n'
    )
    env = base_env(
        tmp_path,
        CALLREC_PUBLIC_BASE_URL="https://calls.example.com",
        CALLREC_ACCOUNTS_FILE=str(accounts),
        **secrets,
    )
    result = CliRunner().invoke(main, ["keys"], env=env)
    assert result.exit_code == 0, result.output
    for value in secrets.values():
        assert value not in result.output
    lines = result.output.splitlines()
    assert "telnyx/default  https://calls.example.com/webhooks/telnyx" in lines
    assert "telnyx/east  https://calls.example.com/webhooks/telnyx/east" in lines
    assert "twilio/default  https://calls.example.com/webhooks/twilio" in lines
    assert "voxo/default  no webhooks (polled only)  (not configured)" in lines
    assert any(line.split()[:3] == ["api_key", "set", "CALLREC_TELNYX_API_KEY"] for line in lines)
    assert any(
        line.split()[:3] == ["public_key", "NOT", "SET"] and "CALLREC_TELNYX_PUBLIC_KEY" in line
        for line in lines
    )
    assert any(line.split()[:2] == ["auth_token", "set"] for line in lines)
    assert any("env TELNYX_EAST_KEY" in line for line in lines)
