"""Settings: defaults give the embedded mode; a bad value names its env var; README in step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.__main__ import markdown_table
from config.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_mode() -> None:
    settings = load_settings({})
    assert settings.database_url.startswith("sqlite:///")
    assert settings.broker_url.startswith("sqla+sqlite:///")
    assert settings.storage_url.startswith("file:///") and settings.storage_url.endswith(
        "/var/recordings"
    )
    assert settings.telnyx_api_base == "https://api.telnyx.com/v2"
    assert settings.telnyx_format == "mp3"
    assert settings.max_body_bytes == 256 * 1024
    assert (settings.sweep_interval_seconds, settings.stuck_after_seconds) == (30, 600)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CALLREC_STORAGE_URL", "ftp://x", "CALLREC_STORAGE_URL"),
        ("CALLREC_STORAGE_URL", "file://relative/path", "CALLREC_STORAGE_URL"),
        ("CALLREC_DATABASE_URL", "mysql://x", "CALLREC_DATABASE_URL"),
        ("CALLREC_BROKER_URL", "kafka://x", "CALLREC_BROKER_URL"),
        ("CALLREC_TELNYX_API_BASE", "api.telnyx.com", "CALLREC_TELNYX_API_BASE"),
        ("CALLREC_TELNYX_AUDIO_HOSTS", "https://x.com/path", "CALLREC_TELNYX_AUDIO_HOSTS"),
        ("CALLREC_TELNYX_FORMAT", "ogg", "CALLREC_TELNYX_FORMAT"),
        ("CALLREC_POLL_INTERVAL_SECONDS", "soon", "CALLREC_POLL_INTERVAL_SECONDS"),
        ("CALLREC_MAX_BODY_BYTES", "-1", "CALLREC_MAX_BODY_BYTES"),
        ("CALLREC_PUBLIC_BASE_URL", "https://x.com/path", "CALLREC_PUBLIC_BASE_URL"),
        ("CALLREC_STUCK_AFTER_SECONDS", "100", "must exceed CALLREC_TASK_TIME_LIMIT_SECONDS"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({name: value})


def test_postgresql_urls_get_the_psycopg_driver() -> None:
    url = load_settings({"CALLREC_DATABASE_URL": "postgresql://u@h/db"}).database_url
    assert url == "postgresql+psycopg://u@h/db"


def test_audio_hosts_parse() -> None:
    hosts = load_settings({"CALLREC_TELNYX_AUDIO_HOSTS": " A.com, b.com:8443 ,*.c.com"})
    assert hosts.telnyx_audio_hosts == ("a.com", "b.com:8443", "*.c.com")


def test_bad_setting_stops_a_process_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import ingest.wsgi"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "CALLREC_STORAGE_URL": "nope", "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "callrec: bad configuration: CALLREC_STORAGE_URL: expected file:///abs/path or "
        "s3://bucket/prefix, got 'nope'"
    ]


def test_readme_configuration_table_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert markdown_table() in readme, "run `python -m config` and paste the table into README"
