"""Provider emulators with many recordings, each in its own process, for the stack benchmarks.

``python bench/emulator_child.py ROLE`` with ROLE one of:

* ``telnyx --count N --size BYTES --bodies PATH`` — a ``TelnyxEmulator`` serving N recordings
  (ids ``bench-<i>``, one audio seed for all so the emulator draws its random block once);
  writes one ``call.recording.saved`` webhook body per recording to PATH as ``id<TAB>body``
  lines (the parent signs each right before sending it);
* ``voxo --count N --size BYTES --url-ttl S`` — a ``VoxoEmulator`` whose call reports list N
  recorded calls from the last hour at once, audio URLs valid S seconds;
* ``moto`` — ``bench/capture_child.py``'s moto S3 server.

Each prints one ready line (``RESULT_PREFIX`` + JSON: base URL, audio host, credentials, the
sha256 of each distinct audio), then answers ``stats`` lines on stdin with the emulator's
request counts (``"GET /media 200": n``) until stdin closes. Like every bench child it dies
with its parent.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from bench.capture_child import (  # noqa: E402  (after the path set-up above)
    _die_with_parent,
    _exit_on_term,
    _serve_until_stdin_closes,
    keep_alive,
    run_moto,
)
from emulators.base import Emulator  # noqa: E402

#: Recordings start this long ago, outside any first poll's look-back (a reconciler poll of
#: the Telnyx account must not race the webhooks).
TELNYX_AGE = timedelta(days=3)


def request_counts(emulator: Emulator) -> dict[str, Any]:
    """``{"METHOD /first-segment STATUS": count}`` of every request answered so far."""
    counts = Counter(
        f"{r.method} /{r.path.strip('/').split('/')[0]} {r.status}" for r in emulator.requests
    )
    return {"requests": dict(counts)}


def run_telnyx(count: int, size: int, bodies: Path) -> None:
    from emulators.telnyx import TelnyxEmulator, recording_saved_body

    emulator = TelnyxEmulator(url_ttl_seconds=3600).start(keep_alive=keep_alive())
    started = datetime.now(UTC) - TELNYX_AGE
    with bodies.open("w", encoding="utf-8") as out:
        for index in range(count):
            rec = emulator.add_recording(
                f"bench-{index}", size=size, seed="bench", started_at=started
            )
            body = recording_saved_body(rec, event_id=f"bench-event-{index}").decode()
            out.write(f"{rec.id}\t{body}\n")
    sha256 = emulator.recordings[0].audio("mp3").sha256() if count else None
    ready = {
        "base_url": emulator.base_url,
        "audio_host": emulator.audio_host,
        "api_key": emulator.api_key,
        "sha256": sha256,
    }
    _serve_until_stdin_closes(ready, emulator.stop, lambda _line: request_counts(emulator))


def run_voxo(count: int, size: int, url_ttl: float) -> None:
    from emulators.voxo import VoxoEmulator

    emulator = VoxoEmulator(url_ttl_seconds=url_ttl).start(keep_alive=keep_alive())
    now = datetime.now(UTC)
    sha256: dict[str, str] = {}
    for index in range(count):
        rec = emulator.add_recording(
            now - timedelta(seconds=60 + index * 3600 // max(count, 1)), size=size
        )
        sha256[rec.unique_id] = rec.audio().sha256()
    ready = {
        "base_url": emulator.base_url,
        "audio_host": emulator.audio_host,
        "email": emulator.email,
        "password": emulator.password,
        "tenant_id": emulator.tenant_id,
        "sha256": sha256,
    }
    _serve_until_stdin_closes(ready, emulator.stop, lambda _line: request_counts(emulator))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench/emulator_child.py", description=__doc__)
    parser.add_argument("role", choices=("telnyx", "voxo", "moto"))
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--size", type=int, default=100 * 1024)
    parser.add_argument("--bodies", type=Path, help="telnyx: where to write the webhook bodies")
    parser.add_argument("--url-ttl", type=float, default=60.0, help="voxo: audio URL lifetime")
    args = parser.parse_args(argv)
    _die_with_parent()
    _exit_on_term()
    if args.role == "telnyx":
        if args.bodies is None:
            parser.error("telnyx needs --bodies")
        run_telnyx(args.count, args.size, args.bodies)
    elif args.role == "voxo":
        run_voxo(args.count, args.size, args.url_ttl)
    else:
        run_moto()


if __name__ == "__main__":
    main()
