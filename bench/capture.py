"""Capture benchmark: callrec's ``capture()`` against bare httpx, and its peak RSS.

    python bench/capture.py [--size-mib 100] [--rounds 5] [--rss] [--quick] [--profile FILE]
                            [--source-mibps R] [--no-malloc-warmup] [--tmp-dir DIR]

1. Throughput (issue target: ratio >= 0.9). A Telnyx emulator runs in its own process. Each
   round runs, each in a fresh process and in alternating order: **callrec** — a fresh SQLite
   ledger and a fresh ``file://`` storage folder, one ``accept_refs`` row, then the timed
   ``capture(runtime, id)`` (API call for a fresh URL, streamed hashed download, write, fsync,
   link, metadata record, ledger updates), checked ``stored`` with the emulator's sha256; and
   **bare** — the same API call, then ``httpx`` ``iter_raw(CHUNK_BYTES)`` to nowhere. One
   untimed warm-up of each side runs first. Ratio = median callrec MiB/s / median bare MiB/s.
   Both children first allocate and free one 4 MiB block (``--no-malloc-warmup`` to skip): a
   fresh process otherwise page-faults every 256 KiB chunk in through glibc's mmap threshold,
   which made the bare side ~1.7x slower and erratic while callrec (already past it after its
   set-up) was not. ``--source-mibps R`` paces the emulator's audio like a provider's egress.
2. ``--rss`` (target: peak RSS of a 1 GiB capture <= 16 MiB above a 10 MiB one, disk and S3):
   peak RSS (``ru_maxrss`` of the child from ``wait4``) of a callrec capture child per size and
   backend; S3 is a moto server in another process, one fresh bucket per run, dropped after.
3. ``--quick``: small sizes (16 MiB x 3 rounds; RSS 2 vs 64 MiB), well under a minute.
4. ``--profile FILE``: one extra callrec capture under cProfile (not timed with the rest);
   stats are written to FILE and the top entries printed.

Everything started is stopped and every temp folder removed, also on errors and Ctrl-C; all
servers listen on 127.0.0.1 only; every wait is bounded. Exit status: 0 all targets met,
1 a target missed, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("capture_child.py")
RESULT_PREFIX = "BENCH-RESULT "  # same as capture_child.RESULT_PREFIX
MIB = 1024 * 1024
RATIO_TARGET = 0.9
RSS_DELTA_TARGET_MIB = 16.0
#: Block both throughput children allocate and free before timing (see capture_child).
MALLOC_WARMUP_BYTES = 4 * MIB
THROUGHPUT_REC = "bench-throughput"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class BenchError(RuntimeError):
    """A child failed, timed out or returned something unexpected."""


@dataclass
class Server:
    """A long-lived child (emulator, moto): runs until its stdin is closed."""

    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    ready: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """What one measured child reported, plus its peak RSS as seen by ``wait4``."""

    result: dict[str, Any]
    maxrss_kib: int
    wall_s: float

    @property
    def seconds(self) -> float:
        return float(self.result["seconds"])


def _child_env() -> dict[str, str]:
    """The benchmark's environment for children: fake AWS credentials, never a real profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CALLREC_"))}
    env.update(FAKE_AWS)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _result_lines(path: Path) -> list[dict[str, Any]]:
    """Every ``RESULT_PREFIX`` line a child wrote so far, decoded, in order."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    # A line still being written is not yet followed by a newline: skip what does not decode.
    decoded: list[dict[str, Any]] = []
    for line in lines:
        if line.startswith(RESULT_PREFIX):
            with contextlib.suppress(ValueError):
                decoded.append(json.loads(line[len(RESULT_PREFIX) :]))
    return decoded


def _result_line(path: Path) -> dict[str, Any] | None:
    """The last ``RESULT_PREFIX`` line a child wrote, decoded."""
    results = _result_lines(path)
    return results[-1] if results else None


class Bench:
    """Owns the temp folder and every child process; ``close()`` stops and removes them all."""

    def __init__(self, tmp_parent: str | None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="callrec-bench-", dir=tmp_parent))
        self.env = _child_env()
        self.servers: list[Server] = []
        self._live: set[subprocess.Popen[bytes]] = set()

    # -- children -----------------------------------------------------------------------------

    def _spawn(
        self, name: str, args: Sequence[str], stdin: int | IO[bytes], child: Path = CHILD
    ) -> tuple[subprocess.Popen[bytes], Path, Path]:
        stdout = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.out"
        stderr = stdout.with_suffix(".err")
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, str(child), *args],
                stdin=stdin,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.tmp,
                start_new_session=True,
            )
        self._live.add(process)
        return process, stdout, stderr

    def start_server(
        self, name: str, args: Sequence[str], timeout: float, child: Path = CHILD
    ) -> Server:
        """Start a server child (``child``: its script) and wait (bounded) for its ready line."""
        process, stdout, stderr = self._spawn(name, args, subprocess.PIPE, child)
        server = Server(name, process, stdout, stderr)
        self.servers.append(server)
        deadline = time.monotonic() + timeout
        while True:
            ready = _result_line(stdout)
            if ready is not None:
                server.ready = ready
                return server
            if process.poll() is not None:
                raise BenchError(f"{name} exited with {process.returncode}:\n{_tail(stderr)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not ready after {timeout:.0f}s:\n{_tail(stderr)}")
            time.sleep(0.05)

    def query(self, server: Server, line: str, timeout: float = 30.0) -> dict[str, Any]:
        """Send one query line to a server child that answers them; wait for its answer."""
        seen = len(_result_lines(server.stdout))
        assert server.process.stdin is not None
        server.process.stdin.write(line.encode() + b"\n")
        server.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            results = _result_lines(server.stdout)
            if len(results) > seen:
                return results[seen]
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{server.name} did not answer {line!r}:\n{_tail(server.stderr)}")
            time.sleep(0.05)

    def stop_server(self, server: Server) -> None:
        """Close its stdin (it stops itself), then SIGTERM, then SIGKILL; each wait bounded."""
        process = server.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        self._reap(process, grace=10.0)
        with contextlib.suppress(ValueError):
            self.servers.remove(server)

    def _reap(self, process: subprocess.Popen[bytes], grace: float) -> None:
        for action, wait in ((None, grace), (process.terminate, 5.0), (process.kill, 5.0)):
            if process.poll() is not None:
                break
            if action is not None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)
        self._live.discard(process)

    def measure(self, role: str, job: Mapping[str, Any], timeout: float) -> Run:
        """Run a measured child with ``job`` on stdin; its own ``ru_maxrss`` via ``wait4``."""
        job = {**job, "deadline_s": timeout + 5}
        job_file = self.tmp / f"job-{uuid.uuid4().hex[:8]}.json"
        job_file.write_text(json.dumps(job))
        started = time.monotonic()
        with job_file.open("rb") as stdin:
            process, stdout, stderr = self._spawn(role, [role], stdin)
        job_file.unlink()
        deadline = started + timeout
        status: int | None = None
        maxrss = 0
        try:
            while status is None:
                pid, raw_status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid == process.pid:
                    status, maxrss = raw_status, usage.ru_maxrss
                    process.returncode = os.waitstatus_to_exitcode(raw_status)
                elif time.monotonic() > deadline:
                    raise BenchError(f"{role} child still running after {timeout:.0f}s")
                else:
                    time.sleep(0.02)
        finally:
            if status is None:
                self._reap(process, grace=0.0)
            self._live.discard(process)
        wall = time.monotonic() - started
        result = _result_line(stdout)
        err_text = _tail(stderr)
        stdout.unlink(missing_ok=True)
        stderr.unlink(missing_ok=True)
        if process.returncode != 0 or result is None:
            raise BenchError(f"{role} child exited with {process.returncode}:\n{err_text}")
        return Run(result, maxrss, wall)

    def close(self) -> None:
        """Stop every child still alive and remove the temp folder."""
        for server in list(self.servers):
            self.stop_server(server)
        for process in list(self._live):
            self._reap(process, grace=0.0)
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- jobs -----------------------------------------------------------------------------------------


def callrec_env(
    folder: Path,
    emulator: Mapping[str, Any],
    storage_url: str | None = None,
    s3_endpoint: str | None = None,
) -> dict[str, str]:
    """CALLREC_* settings of one capture: ledger and broker in ``folder``, fresh storage."""
    env = {
        "CALLREC_DATABASE_URL": f"sqlite:///{folder}/ledger.sqlite",
        "CALLREC_BROKER_URL": f"sqla+sqlite:///{folder}/broker.sqlite",
        "CALLREC_STORAGE_URL": storage_url or f"file://{folder}/recordings",
        "CALLREC_TELNYX_API_KEY": emulator["api_key"],
        "CALLREC_TELNYX_API_BASE": emulator["base_url"],
        "CALLREC_TELNYX_AUDIO_HOSTS": emulator["audio_host"],
        "CALLREC_HTTP_TIMEOUT_SECONDS": "30",
        "CALLREC_LOG_LEVEL": "warning",
    }
    if s3_endpoint:
        env["CALLREC_S3_ENDPOINT_URL"] = s3_endpoint
    return env


def _timeout_for(size: int) -> float:
    """A generous bound for one capture of ``size`` bytes (>= 1 MiB/s plus start-up)."""
    return 60.0 + size / MIB


@contextlib.contextmanager
def _round_folder(bench: Bench) -> Iterator[Path]:
    folder = bench.tmp / f"round-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_callrec(
    bench: Bench,
    emulator: Mapping[str, Any],
    rec_id: str,
    *,
    storage_url: str | None = None,
    s3_endpoint: str | None = None,
    profile: str | None = None,
    malloc_warmup: int = 0,
) -> Run:
    """One capture child; checks ``stored``, the byte count and the sha256."""
    expected = emulator["recordings"][rec_id]
    with _round_folder(bench) as folder:
        job = {
            "env": callrec_env(folder, emulator, storage_url, s3_endpoint),
            "recording_id": rec_id,
            "profile": profile,
            "malloc_warmup": malloc_warmup,
        }
        run = bench.measure("callrec", job, _timeout_for(expected["size"]))
    result = run.result
    if result["state"] != "stored":
        raise BenchError(f"capture ended {result['state']}: {result.get('detail')}")
    if result["sha256"] != expected["sha256"] or result["bytes"] != expected["size"]:
        raise BenchError(
            f"stored {result['bytes']} bytes sha256 {result['sha256']}, "
            f"expected {expected['size']} bytes sha256 {expected['sha256']}"
        )
    if result["stored_bytes"] != expected["size"]:
        raise BenchError(f"storage holds {result['stored_bytes']} bytes")
    return run


def run_bare(
    bench: Bench, emulator: Mapping[str, Any], rec_id: str, *, malloc_warmup: int = 0
) -> Run:
    """One bare-httpx child; checks the byte count."""
    expected = emulator["recordings"][rec_id]
    job = {
        "base_url": emulator["base_url"],
        "api_key": emulator["api_key"],
        "recording_id": rec_id,
        "malloc_warmup": malloc_warmup,
    }
    run = bench.measure("bare", job, _timeout_for(expected["size"]))
    if run.result["bytes"] != expected["size"]:
        raise BenchError(f"bare read {run.result['bytes']} of {expected['size']} bytes")
    return run


# -- reports --------------------------------------------------------------------------------------


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a live process (0.0 when /proc is unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mibps(size: int, seconds: float) -> float:
    return size / MIB / seconds


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def throughput(
    bench: Bench, emulator: Mapping[str, Any], rounds: int, emulator_pid: int, malloc_warmup: int
) -> bool:
    """Interleaved A/B rounds; prints per-round and summary figures; True if the ratio passes.

    ``emu cpu s`` is the emulator's CPU time during the run: near the wall time means the
    emulator (not the measured side) was the bottleneck. ``faults`` are the child's minor page
    faults in the timed section (see ``capture_child._settle_allocator``).
    """
    size = int(emulator["recordings"][THROUGHPUT_REC]["size"])
    warm = f"{malloc_warmup // MIB} MiB malloc warm-up" if malloc_warmup else "no malloc warm-up"
    print(
        f"\n== throughput: {size / MIB:.0f} MiB recording, {rounds} rounds "
        f"(+1 warm-up), emulator in its own process, {warm} in both children =="
    )
    runners = {
        "callrec": lambda: run_callrec(
            bench, emulator, THROUGHPUT_REC, malloc_warmup=malloc_warmup
        ),
        "bare": lambda: run_bare(bench, emulator, THROUGHPUT_REC, malloc_warmup=malloc_warmup),
    }
    runners["callrec"]()
    runners["bare"]()
    sides: dict[str, list[Run]] = {"callrec": [], "bare": []}
    emulator_cpu: dict[str, list[float]] = {"callrec": [], "bare": []}
    print(
        f"{'round':>5}  {'side':<8}{'seconds':>9}{'MiB/s':>9}{'user s':>8}{'sys s':>7}"
        f"{'faults':>8}{'emu cpu s':>11}"
    )
    for i in range(rounds):
        order = ("callrec", "bare") if i % 2 == 0 else ("bare", "callrec")
        for side in order:
            emu_cpu = _cpu_of(emulator_pid)
            run = runners[side]()
            emu_cpu = _cpu_of(emulator_pid) - emu_cpu
            sides[side].append(run)
            emulator_cpu[side].append(emu_cpu)
            r = run.result
            print(
                f"{i + 1:>5}  {side:<8}{run.seconds:>9.3f}{_mibps(size, run.seconds):>9.1f}"
                f"{r['user_s']:>8.2f}{r['sys_s']:>7.2f}{r['minor_faults']:>8}{emu_cpu:>11.2f}"
            )
    medians: dict[str, float] = {}
    cpu_medians: dict[str, float] = {}
    print(
        f"\n{'side':<8}{'median s':>10}{'min s':>8}{'max s':>8}{'median MiB/s':>14}"
        f"{'cpu s (med)':>13}"
    )
    for side, runs in sides.items():
        secs = [run.seconds for run in runs]
        cpu = statistics.median(run.result["user_s"] + run.result["sys_s"] for run in runs)
        medians[side] = statistics.median(secs)
        cpu_medians[side] = cpu
        print(
            f"{side:<8}{medians[side]:>10.3f}{min(secs):>8.3f}{max(secs):>8.3f}"
            f"{_mibps(size, medians[side]):>14.1f}{cpu:>13.2f}"
        )
    ratio = medians["bare"] / medians["callrec"]  # = callrec MiB/s / bare MiB/s
    best = min(r.seconds for r in sides["bare"]) / min(r.seconds for r in sides["callrec"])
    pairs = [b.seconds / a.seconds for a, b in zip(sides["callrec"], sides["bare"], strict=True)]
    ok = ratio >= RATIO_TARGET
    print(
        f"ratio callrec/bare throughput (medians): {ratio:.3f}  target >= {RATIO_TARGET}  "
        f"{_verdict(ok)}"
    )
    print(f"  (best-of-{rounds} ratio {best:.3f}; per-round {min(pairs):.3f}..{max(pairs):.3f})")
    print_ceilings(
        medians["bare"], cpu_medians["callrec"], statistics.median(emulator_cpu["callrec"])
    )
    return ok


def print_ceilings(bare_s: float, callrec_cpu_s: float, emulator_cpu_s: float) -> None:
    """The most the ratio can be on this machine, from this run's CPU times: a capture cannot
    end before its own CPU time has passed on one core, nor before its CPU and the emulator's
    (which serves the bytes: a provider does that elsewhere) have passed on all cores."""
    cores = os.cpu_count() or 1
    one_thread = bare_s / callrec_cpu_s if callrec_cpu_s > 0 else math.nan
    all_cores = bare_s * cores / (callrec_cpu_s + emulator_cpu_s) if callrec_cpu_s > 0 else math.nan
    print(
        f"  CPU ceiling of the ratio here: {one_thread:.2f} for a capture on one thread "
        f"(bare {bare_s:.3f} s / callrec CPU {callrec_cpu_s:.3f} s), {min(1.0, all_cores):.2f} "
        f"with its work spread over all {cores} cores (with the emulator's "
        f"{emulator_cpu_s:.3f} s of CPU per callrec round)"
    )


def _load_note() -> str:
    """The 1-minute load average against the CPU count: other work skews every figure."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "load average unknown"
    cpus = os.cpu_count() or 1
    busy = "  ** machine busy: figures unreliable **" if load > cpus / 2 else ""
    return f"load average {load:.2f} on {cpus} CPUs{busy}"


def _drop_bucket(client: Any, name: str) -> None:
    """Abort uploads, delete objects and the bucket, so moto frees the memory."""
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


def rss(bench: Bench, emulator: Mapping[str, Any], small: str, big: str) -> bool:
    """Peak RSS of a capture child per size, disk and S3; True if both deltas pass."""
    import boto3
    from botocore.config import Config

    sizes = {rec: int(emulator["recordings"][rec]["size"]) for rec in (small, big)}
    moto = bench.start_server("moto", ["moto"], timeout=60)
    endpoint = moto.ready["endpoint"]
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(
        "s3",
        endpoint_url=endpoint,
        config=Config(connect_timeout=10, read_timeout=120, retries={"max_attempts": 2}),
    )
    print(f"\n== peak RSS of a capture child (wait4 ru_maxrss; moto S3 at {endpoint}) ==")
    print(
        f"{'backend':<8}{'recording':>11}{'peak MiB':>10}{'VmHWM MiB':>11}{'before MiB':>12}"
        f"{'seconds':>9}{'MiB/s':>8}"
    )
    peaks: dict[tuple[str, str], float] = {}
    try:
        for backend in ("disk", "s3"):
            for rec in (small, big):
                bucket = f"bench-{uuid.uuid4().hex[:12]}"
                storage_url = s3_endpoint = None
                if backend == "s3":
                    client.create_bucket(Bucket=bucket)
                    storage_url, s3_endpoint = f"s3://{bucket}/recordings", endpoint
                try:
                    run = run_callrec(
                        bench, emulator, rec, storage_url=storage_url, s3_endpoint=s3_endpoint
                    )
                finally:
                    if backend == "s3":
                        _drop_bucket(client, bucket)
                peak = run.maxrss_kib / 1024
                peaks[backend, rec] = peak
                r = run.result
                print(
                    f"{backend:<8}{sizes[rec] / MIB:>7.0f} MiB{peak:>10.1f}"
                    f"{(r['hwm_after_kib'] or 0) / 1024:>11.1f}"
                    f"{(r['rss_before_kib'] or 0) / 1024:>12.1f}"
                    f"{run.seconds:>9.2f}{_mibps(sizes[rec], run.seconds):>8.1f}"
                )
    finally:
        client.close()
        bench.stop_server(moto)
    ok = True
    for backend in ("disk", "s3"):
        delta = peaks[backend, big] - peaks[backend, small]
        passed = delta <= RSS_DELTA_TARGET_MIB
        ok = ok and passed
        print(
            f"{backend:<5} peak({sizes[big] / MIB:.0f} MiB) - peak({sizes[small] / MIB:.0f} MiB)"
            f" = {delta:+.1f} MiB  target <= {RSS_DELTA_TARGET_MIB:.0f}  {_verdict(passed)}"
        )
    return ok


def profile(bench: Bench, emulator: Mapping[str, Any], path: str) -> None:
    """One capture under cProfile; prints the functions with the most own time."""
    import pstats

    out = str(Path(path).resolve())
    run = run_callrec(bench, emulator, THROUGHPUT_REC, profile=out)
    print(f"\n== cProfile of one capture ({run.seconds:.3f}s under the profiler): {out} ==")
    pstats.Stats(out).sort_stats("tottime").print_stats(15)


# -- main -----------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/capture.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--size-mib",
        type=int,
        default=None,
        help="throughput recording size (default 100; 16 with --quick)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="A/B rounds (default 5; 3 quick)")
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS, disk and S3")
    parser.add_argument("--quick", action="store_true", help="small sizes, < 60 s")
    parser.add_argument("--profile", metavar="FILE", help="cProfile one extra capture into FILE")
    parser.add_argument("--tmp-dir", help="parent of the temp folder (default: system temp)")
    parser.add_argument(
        "--source-mibps",
        type=float,
        default=0.0,
        help="pace the emulator's audio at this rate, like a provider's egress "
        "(default 0: as fast as it can, ~1.2 GiB/s here)",
    )
    parser.add_argument(
        "--no-malloc-warmup",
        action="store_true",
        help="time both throughput children with their allocator as it is",
    )
    args = parser.parse_args(argv)
    if args.size_mib is None:
        args.size_mib = 16 if args.quick else 100
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.size_mib < 1 or args.rounds < 1:
        parser.error("--size-mib and --rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 = all targets met, 1 = a target missed, 2 = the bench failed."""
    args = _parse(argv)
    small_mib, big_mib = (2, 64) if args.quick else (10, 1024)
    recs = {THROUGHPUT_REC: args.size_mib * MIB}
    if args.rss:
        recs |= {f"bench-rss-{small_mib}m": small_mib * MIB, f"bench-rss-{big_mib}m": big_mib * MIB}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    print(
        f"callrec capture benchmark: python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    bench = Bench(args.tmp_dir)
    print(f"temp folder (disk storage, ledgers): {bench.tmp}")
    print(f"before: {_load_note()}")
    ok = True
    try:
        server = bench.start_server(
            "emulator",
            [
                "emulator",
                f"--mib-per-s={args.source_mibps}",
                *(f"--rec={k}:{v}" for k, v in recs.items()),
            ],
            timeout=120,
        )
        emulator = server.ready
        paced = f", audio paced at {args.source_mibps:g} MiB/s" if args.source_mibps else ""
        print(f"emulator: {emulator['base_url']} (pid {server.process.pid}){paced}")
        warmup = 0 if args.no_malloc_warmup else MALLOC_WARMUP_BYTES
        ok = throughput(bench, emulator, args.rounds, server.process.pid, warmup) and ok
        if args.rss:
            ok = rss(bench, emulator, f"bench-rss-{small_mib}m", f"bench-rss-{big_mib}m") and ok
        if args.profile:
            profile(bench, emulator, args.profile)
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        bench.close()
    print(f"\nafter: {_load_note()}")
    print(f"overall: {_verdict(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
