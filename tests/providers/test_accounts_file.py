"""The accounts file: several accounts per provider, validated at start-up with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings
from providers.errors import ConfigurationMissing
from providers.registry import DEFAULT_ACCOUNT, configured_accounts

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[[accounts]]
provider = "telnyx"
name = "east"
api_base = "http://127.0.0.1:9/v2"
audio_hosts = ["127.0.0.1:9", "*.example.com"]
poll_interval_seconds = 60
credentials = { api_key_env = "T_EAST_KEY", public_key = "inline-public-key" }
options = { format = "wav" }

[[accounts]]
provider = "telnyx"
name = "west_2"
poll = false

[[accounts]]
provider = "twilio"
name = "default"
credentials = { account_sid = "AC00000000000000000000000000000001", auth_token_env = "TW_TOKEN" }
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return str(path)


def accounts_from(path: str, **env: str) -> dict[tuple[str, str], object]:
    return configured_accounts(load_settings({"CALLREC_ACCOUNTS_FILE": path, **env}))  # type: ignore[return-value]


def test_file_accounts_join_the_env_shorthand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_EAST_KEY", "secret-east")
    monkeypatch.setenv("TW_TOKEN", "secret-token")
    accounts = configured_accounts(
        load_settings(
            {"CALLREC_ACCOUNTS_FILE": write(tmp_path, GOOD), "CALLREC_TELNYX_FORMAT": "mp3"}
        )
    )
    east = accounts[("telnyx", "east")]
    assert east.api_base == "http://127.0.0.1:9/v2"
    assert east.audio_hosts == ("127.0.0.1:9", "*.example.com")
    assert east.secret("api_key") == "secret-east"
    assert east.secret("public_key") == "inline-public-key"
    assert east.options == {"format": "wav"}
    assert (east.polled, east.poll_interval_seconds) == (True, 60)
    assert "secret" not in repr(east)
    west = accounts[("telnyx", "west_2")]
    assert west.api_base == "https://api.telnyx.com/v2"  # the provider's setting as default
    assert west.options == {"format": "mp3"} and west.polled is False
    with pytest.raises(ConfigurationMissing, match=r"telnyx/west_2 credentials.api_key_env"):
        west.secret("api_key")
    # The shorthand default stays; a file account named default replaces it.
    assert accounts[("telnyx", DEFAULT_ACCOUNT)].sources["api_key"] == "CALLREC_TELNYX_API_KEY"
    twilio = accounts[("twilio", DEFAULT_ACCOUNT)]
    assert twilio.secret("auth_token") == "secret-token"
    assert twilio.sources["auth_token"] == "twilio/default env TW_TOKEN"


def test_shorthand_accounts_without_credentials_are_not_polled() -> None:
    accounts = configured_accounts(load_settings({"CALLREC_TELNYX_API_KEY": "k"}))
    assert accounts[("telnyx", DEFAULT_ACCOUNT)].polled
    assert not accounts[("quo", DEFAULT_ACCOUNT)].polled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[accounts]]\nprovider = 'telnyx'\nname = 'East'\n", "account telnyx/East: name: "),
        ("[[accounts]]\nprovider = 'telnyx'\nname = '../x'\n", "account telnyx/../x: name: "),
        ("[[accounts]]\nprovider = 'nope'\nname = 'a'\n", "account nope/a: provider: expected"),
        ("[[accounts]]\nname = 'a'\n", "accounts[0]: provider: expected one of"),
        (
            "[[accounts]]\nprovider = 'telnyx'\nname = 'a'\napi_base = 'ftp://x'\n",
            "account telnyx/a: api_base: expected an http(s) URL",
        ),
        (
            "[[accounts]]\nprovider = 'telnyx'\nname = 'a'\naudio_hosts = ['https://x/y']\n",
            "account telnyx/a: audio_hosts: ",
        ),
        (
            "[[accounts]]\nprovider = 'telnyx'\nname = 'a'\noptions = { format = 'ogg' }\n",
            "account telnyx/a: options.format: expected one of mp3, wav",
        ),
        (
            "[[accounts]]\nprovider = 'telnyx'\nname = 'a'\noptions = { colour = 'x' }\n",
            "account telnyx/a: options.colour: expected one of",
        ),
        (
            "[[accounts]]\nprovider = 'telnyx'\nname = 'a'\ncredentials = { password = 'x' }\n",
            "account telnyx/a: credentials.password: expected one of",
        ),
        (
            "[[accounts]]\nprovider = 'telnyx'\nname = 'a'\n"
            "credentials = { api_key = 'x', api_key_env = 'Y' }\n",
            "account telnyx/a: credentials.api_key: give api_key or api_key_env, not both",
        ),
        (
            "[[accounts]]\nprovider = 'telnyx'\nname = 'a'\n"
            "credentials = { api_key_env = 'CALLREC_TEST_SURELY_UNSET' }\n",
            "credentials.api_key_env: environment variable CALLREC_TEST_SURELY_UNSET is not set",
        ),
        (
            "[[accounts]]\nprovider = 'telnyx'\nname = 'a'\npoll_interval_seconds = 1\n",
            "account telnyx/a: poll_interval_seconds: must be an integer >= 10",
        ),
        ("[[accounts]]\nprovider = 'telnyx'\nname = 'a'\ncolour = 1\n", "telnyx/a: colour: "),
        (
            "[[accounts]]\nprovider = 'quo'\nname = 'a'\n" * 2,
            "account quo/a: name: listed twice",
        ),
        ("accounts = 'x'\n", "accounts must be an array of tables"),
        ("[telnyx]\n", "unknown top-level key(s) ['telnyx']"),
        ("[[accounts]\n", "not valid TOML"),
    ],
)
def test_a_bad_file_names_file_account_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        accounts_from(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the accounts file"):
        accounts_from(str(tmp_path / "absent.toml"))


def test_a_bad_file_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[[accounts]]\nprovider = 'telnyx'\nname = 'A B'\n")
    result = subprocess.run(
        [sys.executable, "-c", "import workers.celery_app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "CALLREC_ACCOUNTS_FILE": path, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"callrec: bad configuration: {path}: account telnyx/A B: name: expected lower-case "
        "letters, digits, '-' or '_' (max 64)"
    ]
