"""Private brokers a fault test may kill: never the shared Redis (6379) or RabbitMQ (5672).

``PrivateRedis``: ``redis-server`` on a free loopback port with AOF (``appendfsync everysec``,
the durable production setting) in the test's folder; ``kill()`` is a ``kill -9``, ``start()``
again brings it back on the same port and data. ``PrivateRabbit``: a RabbitMQ node of its own
(name, ports, mnesia and logs in the test's folder, the system config files bypassed);
``restart_app()`` is ``rabbitmqctl stop_app`` + ``start_app``, the node's own restart of the
broker with its durable queues.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from emulators.sandbox import wait_until

__all__ = ["PrivateRabbit", "PrivateRedis", "free_port", "port_open"]

_RABBIT_SBIN = Path("/usr/lib/rabbitmq/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def _require(binary: str) -> str:
    # RabbitMQ's own scripts, not Debian's /usr/sbin wrappers (they su to the rabbitmq user,
    # dropping our environment, so the system node would be started instead).
    own = _RABBIT_SBIN / binary
    path = str(own) if own.exists() else shutil.which(binary)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{binary} is not installed (CI=true: broker fault tests must run)")
        pytest.skip(f"{binary} is not installed")
    return path


class PrivateRedis:
    """A ``redis-server`` this test owns (``url``: its db 0)."""

    def __init__(self, folder: Path) -> None:
        self._binary = _require("redis-server")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def _options(self) -> list[str]:
        options = {"port": str(self.port), "bind": "127.0.0.1", "dir": str(self.folder)}
        options |= {"save": "", "appendonly": "yes", "appendfsync": "everysec"}
        return [part for name, value in options.items() for part in (f"--{name}", value)]

    def start(self) -> PrivateRedis:
        log = (self.folder / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [self._binary, *self._options()],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(lambda: port_open(self.port), 20, 0.05, f"redis-server on {self.port}")
        return self

    def kill(self) -> None:
        """``kill -9``: no shutdown save, whatever the last second's AOF holds survives."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)

    def stop(self) -> None:
        self.kill()

    close = stop


class PrivateRabbit:
    """A RabbitMQ node this test owns: ``url`` is its default vhost, guest allowed on loopback."""

    def __init__(self, folder: Path) -> None:
        self._server = _require("rabbitmq-server")
        self._ctl = _require("rabbitmqctl")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.node = f"callrec-faults-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        (self.folder / "rabbitmq-env.conf").write_text("")  # not the system's NODENAME
        (self.folder / "rabbitmq.conf").write_text("loopback_users = none\n")
        (self.folder / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._started = False

    def _ctl_run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [self._ctl, "-n", self.node, *args],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> PrivateRabbit:
        subprocess.run([self._server, "-detached"], env=self.env, check=True, timeout=60)
        self._started = True
        self.wait_up()
        return self

    def wait_up(self) -> None:
        wait_until(lambda: port_open(self.port), 150, 0.2, f"RabbitMQ node {self.node}")

    def stop_app(self) -> None:
        self._ctl_run("stop_app")

    def start_app(self) -> None:
        self._ctl_run("start_app")
        self.wait_up()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._ctl_run("stop", timeout=60)
        except (subprocess.SubprocessError, OSError):
            pid_file = self.folder / "mnesia" / f"{self.node}.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
