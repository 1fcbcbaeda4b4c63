"""Find the process doing a given piece of work, from /proc (Linux; psutil is not a dependency).

A Celery prefork worker does each capture in one of its pool children. The child streaming a
recording is the one holding the TCP connection whose local port the emulator saw as the
client's (``PacedTelnyxEmulator.streams``): ``/proc/net/tcp`` gives that socket's inode and
``/proc/<pid>/fd`` says who holds it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["children", "pid_holding"]

_PROC = Path("/proc")


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (a prefork worker's pool)."""
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid …": comm may hold spaces or parentheses.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


def _socket_inode(local_port: int) -> int | None:
    """The inode of the loopback TCP socket bound to ``local_port``, if open."""
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (_PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == local_port and fields[9] != "0":
                    return int(fields[9])
    return None


def pid_holding(local_port: int, candidates: Iterable[int]) -> int | None:
    """Which of ``candidates`` holds the TCP connection from ``local_port`` (None: nobody now)."""
    inode = _socket_inode(local_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in candidates:
        with contextlib.suppress(OSError):
            for fd in os.listdir(_PROC / str(pid) / "fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(_PROC / str(pid) / "fd" / fd) == target:
                        return pid
    return None
