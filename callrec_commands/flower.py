"""``callrec flower``: Celery's Flower, on loopback unless basic auth is configured.

The Procfile's ``flower`` runs it. Flower reads ``FLOWER_BASIC_AUTH`` from its environment, so
the credentials never appear on a command line (``ps``).
"""

from __future__ import annotations

import ipaddress
import os
import sys

import click

from callrec_commands.common import settings
from config.settings import Settings

__all__ = ["flower", "flower_command", "is_loopback"]


def is_loopback(address: str) -> bool:
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def flower_command(loaded: Settings, address: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to exec; ``ClickException`` when it must not start."""
    if not is_loopback(address) and not loaded.flower_basic_auth:
        raise click.ClickException(
            f"refusing to start Flower on {address}: it is not a loopback address and "
            "CALLREC_FLOWER_BASIC_AUTH (user:password) is not set"
        )
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "flower",
        f"--address={address}",
        f"--port={port}",
    ]
    env = dict(os.environ)
    if loaded.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = loaded.flower_basic_auth
    return argv, env


@click.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5555, show_default=True, type=int, help="Port to bind.")
def flower(address: str, port: int) -> None:
    """Run Flower (needs Redis or RabbitMQ: the embedded SQLite broker has no events)."""
    argv, env = flower_command(settings(), address, port)
    auth = "with basic auth" if "FLOWER_BASIC_AUTH" in env else "without auth (loopback only)"
    click.echo(f"starting Flower on {address}:{port} {auth}", err=True)
    os.execvpe(argv[0], argv, env)  # noqa: S606  # replaces this process, as Procfile's exec
