"""Small helpers shared by the bench scripts: processes, ports, waiting, percentiles, tables.

Kept generic on purpose: any bench script may use them (``wait_until`` is the sandbox's).
"""

from __future__ import annotations

import http.client
import math
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from emulators.sandbox import ManagedProcess as SandboxProcess
from emulators.sandbox import wait_until as sandbox_wait_until

__all__ = [
    "REPO",
    "ManagedProcess",
    "free_port",
    "http_status",
    "median",
    "percentile",
    "print_table",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


wait_until = sandbox_wait_until  # one polling loop for tests, benchmarks and demos


def http_status(
    url: str, method: str = "GET", body: bytes | None = None,
    headers: Mapping[str, str] | None = None, timeout: float = 2.0,
) -> int | None:
    """The status of one plain-HTTP request, or None when the server does not answer."""
    scheme, _, rest = url.partition("://")
    if scheme != "http":
        raise ValueError("only http:// URLs")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    connection = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        connection.request(method, "/" + path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


ManagedProcess = SandboxProcess  # the one process wrapper of tests, benchmarks and demos


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def median(values: Sequence[float]) -> float:
    """The median (mean of the middle two for an even count); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, file: IO[str] | None = None
) -> None:
    """Print rows as an aligned plain-text table (numbers right-aligned)."""
    out = file or sys.stdout
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w)
                         for v, w, n in zip(values, widths, numeric, strict=True)).rstrip()

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)
    out.flush()
