"""The Procfile's ``flower`` line is the command README names, and ``callrec flower`` binds
loopback by default and refuses a public address without basic auth.

Flower itself is not started here: on the embedded SQLite broker it cannot run (no events)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from callrec_cli import main
from callrec_commands.flower import flower_command, is_loopback
from tests.fixtures.callrec import REPO, base_env, settings_from

PUBLIC = "0.0.0.0"  # noqa: S104  # the address Flower must refuse without auth


def _procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_procfile_flower_line_is_what_readme_says() -> None:
    line = _procfile()["flower"]
    assert shlex.split(line) == [
        "exec",
        "callrec",
        "flower",
        "--address=${FLOWER_ADDRESS:-127.0.0.1}",
        "--port=${FLOWER_PORT:-5555}",
    ]
    readme = " ".join((REPO / "README.md").read_text().split())
    assert re.search(
        r"`flower` \(`callrec flower` on `\$FLOWER_ADDRESS:\$FLOWER_PORT`, default "
        r"`127\.0\.0\.1:5555`, with HTTP basic auth from `CALLREC_FLOWER_BASIC_AUTH`",
        readme,
    )
    assert "flower" in main.commands


def test_public_address_without_auth_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["flower", "--address", PUBLIC], env=base_env(tmp_path))
    assert result.exit_code == 1
    assert "refusing to start Flower on 0.0.0.0" in result.output
    assert "CALLREC_FLOWER_BASIC_AUTH" in result.output


def test_bad_basic_auth_setting_is_refused_without_echoing_it(tmp_path: Path) -> None:
    env = base_env(tmp_path, CALLREC_FLOWER_BASIC_AUTH="no-colon-secret")
    result = CliRunner().invoke(main, ["flower"], env=env)
    assert result.exit_code == 1
    assert "CALLREC_FLOWER_BASIC_AUTH: expected user:password" in result.output
    assert "no-colon-secret" not in result.output


def test_command_line_and_auth_environment(tmp_path: Path) -> None:
    plain = settings_from(base_env(tmp_path))
    argv, env = flower_command(plain, "127.0.0.1", 5555)
    assert argv[1:] == [
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "flower",
        "--address=127.0.0.1",
        "--port=5555",
    ]
    assert "FLOWER_BASIC_AUTH" not in env or env["FLOWER_BASIC_AUTH"] == ""
    secured = settings_from(base_env(tmp_path, CALLREC_FLOWER_BASIC_AUTH="ops:s3cret"))
    argv, env = flower_command(secured, PUBLIC, 8080)
    assert env["FLOWER_BASIC_AUTH"] == "ops:s3cret"
    assert not any("s3cret" in arg for arg in argv)  # never on the command line (ps)
    assert [is_loopback(a) for a in ("127.0.0.1", "::1", "localhost", PUBLIC, "example.com")] == [
        True,
        True,
        True,
        False,
        False,
    ]
