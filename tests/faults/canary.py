"""R23, the secrets/PII canary: what must never reach a log line or a Sentry event, and the
scanner that looks for it.

Canaries are the live secrets of every configuration a test runs callrec with (each setting
declared ``secret=True``, the accounts file's secret credentials, the Basic-auth pairs built
from them, the AWS secret key), the phone numbers the emulators put in payloads
(``emulators.numbers``), and shapes that are secret whatever their value: presigned-URL
parameters, a URL query string the product did not redact, a Bearer token, a JWT, an E.164
number. A hit names where it is and which canary, never the secret: the excerpt shows each
match as ``«label #sha256[:8]»``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import declared_settings
from emulators import numbers

__all__ = ["CanarySet", "Hit", "Scanner", "mask"]

#: Shorter values are not scanned for (too likely to occur by chance, e.g. "testing").
MIN_SECRET_LENGTH = 8

_SECRET_SETTINGS = frozenset(name for name, _, _, secret in declared_settings() if secret)
#: The DSN is the test's own receiver, and every envelope names it in its header.
_NOT_SCANNED = frozenset({"CALLREC_SENTRY_DSN"})
_BASIC_AUTH_SETTINGS = frozenset({"CALLREC_STATUS_BASIC_AUTH", "CALLREC_FLOWER_BASIC_AUTH"})


def _digits(number: str) -> str:
    """The last ten digits: found with or without ``+1``."""
    return re.escape(re.sub(r"\D", "", number)[-10:])


#: (label, regex) of the canaries that need no configuration.
FIXED: tuple[tuple[str, str], ...] = (
    ("phone TELNYX_FROM", _digits(numbers.TELNYX_FROM)),
    ("phone TELNYX_TO", _digits(numbers.TELNYX_TO)),
    ("phone QUO_PARTICIPANT", _digits(numbers.QUO_PARTICIPANT)),
    ("phone QUO_LINE", _digits(numbers.QUO_LINE)),
    ("phone VOXO_DIALED", _digits(numbers.VOXO_DIALED)),
    ("phone VOICEGENIE", _digits(numbers.VOICEGENIE_PREFIX) + r"[01]\d\d"),
    ("phone E.164", r"(?<![\w+])\+[1-9]\d{9,14}(?!\d)"),
    ("URL query string", r"https?://[^\s?#\"'<>\\]+\?(?!\[redacted\])[^\s\"'<>\\]+"),
    ("signed URL parameter", r"X-Amz-(?:Signature|Credential|Security-Token)=?[^&\s\"'<>\\]*"),
    ("signed URL credential", r"ASIAEMULATOR[^&\s\"'<>\\]*"),
    ("bearer token", r"\b(?i:bearer)\s+(?!\[redacted\])[A-Za-z0-9._~+/=-]{8,}"),
    ("JWT", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
)


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Hit:
    """One canary found: ``where`` (file:line, envelope…), its ``label`` and a masked excerpt."""

    where: str
    label: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where}: {self.label}: {self.excerpt}"


class CanarySet:
    """The fixed canaries plus every secret value seen so far (:meth:`add_env`)."""

    def __init__(self) -> None:
        self._secrets: dict[str, str] = {}  # value -> label
        self._regex: re.Pattern[str] | None = None
        self._labels: list[str] = []

    def __len__(self) -> int:
        return len(FIXED) + len(self._secrets)

    def add_secret(self, label: str, value: str | None) -> None:
        if value and len(value) >= MIN_SECRET_LENGTH and value not in self._secrets:
            self._secrets[value] = label
            self._regex = None

    def add_env(self, env: Mapping[str, str]) -> None:
        """Every secret of a configuration: secret settings, Basic-auth pairs, the accounts
        file's secret credentials, the AWS secret key."""
        for name, value in env.items():
            if name in _SECRET_SETTINGS and name not in _NOT_SCANNED:
                self.add_secret(f"secret {name}", value)
                if name in _BASIC_AUTH_SETTINGS:
                    self._add_basic_auth(name, value.split(","))
        self.add_secret("secret AWS_SECRET_ACCESS_KEY", env.get("AWS_SECRET_ACCESS_KEY"))
        sid, token = env.get("CALLREC_TWILIO_ACCOUNT_SID"), env.get("CALLREC_TWILIO_AUTH_TOKEN")
        if sid and token:
            self._add_basic_auth("CALLREC_TWILIO_AUTH_TOKEN", [f"{sid}:{token}"])
        if env.get("CALLREC_ACCOUNTS_FILE"):
            for label, value in _account_file_secrets(Path(env["CALLREC_ACCOUNTS_FILE"]), env):
                self.add_secret(label, value)

    def _add_basic_auth(self, name: str, pairs: Iterable[str]) -> None:
        for pair in pairs:
            user, _, password = pair.strip().partition(":")
            self.add_secret(f"secret {name} (password)", password)
            if user and password:
                encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
                self.add_secret(f"secret {name} (Basic header)", encoded)

    def finditer(self, text: str) -> Iterator[tuple[str, re.Match[str]]]:
        """(label, match) of every canary in ``text``."""
        regex = self._compiled()
        for match in regex.finditer(text):
            yield self._labels[(match.lastindex or 1) - 1], match

    def _compiled(self) -> re.Pattern[str]:
        if self._regex is None:
            patterns = list(FIXED) + [
                (label, re.escape(value))
                for value, label in sorted(self._secrets.items(), key=lambda kv: -len(kv[0]))
            ]
            self._labels = [label for label, _ in patterns]
            self._regex = re.compile("|".join(f"({pattern})" for _, pattern in patterns))
        return self._regex


def _account_file_secrets(path: Path, env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(label, value) of each credential of the accounts file whose setting is secret."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return
    for entry in document.get("accounts", []):
        if not isinstance(entry, dict):
            continue
        provider = str(entry.get("provider", "")).upper()
        for key, value in dict(entry.get("credentials", {})).items():
            field_name = key.removesuffix("_env")
            if f"CALLREC_{provider}_{field_name.upper()}" not in _SECRET_SETTINGS:
                continue
            secret = env.get(str(value)) if key.endswith("_env") else value
            if isinstance(secret, str):
                yield f"secret {provider.lower()}/{entry.get('name')} {field_name}", secret


def mask(canaries: CanarySet, text: str) -> tuple[str, list[tuple[str, int]]]:
    """``text`` with every canary replaced by ``«label #fingerprint»``, and (label, position in
    the masked text) of each."""
    out, found, last, length = [], [], 0, 0
    for label, match in canaries.finditer(text):
        out.append(text[last : match.start()])
        length += match.start() - last
        placeholder = f"«{label} #{fingerprint(match.group())}»"
        found.append((label, length))
        out.append(placeholder)
        length += len(placeholder)
        last = match.end()
    out.append(text[last:])
    return "".join(out), found


@dataclass
class Scanner:
    """Scans log files (only what was appended since the last scan), log text and Sentry
    envelopes for canaries, and counts what it read."""

    canaries: CanarySet = field(default_factory=CanarySet)
    lines: int = 0
    events: int = 0
    envelopes: int = 0
    _offsets: dict[Path, int] = field(default_factory=dict)
    _line_numbers: dict[Path, int] = field(default_factory=dict)

    def watch(self, path: Path) -> None:
        """Scan ``path`` from now on (from where it ends, if it was watched already)."""
        self._offsets.setdefault(path, 0)

    def scan_files(self) -> list[Hit]:
        """What every watched file gained since the last scan (up to its last full line)."""
        hits: list[Hit] = []
        for path, offset in list(self._offsets.items()):
            try:
                with path.open("rb") as stream:
                    stream.seek(offset)
                    data = stream.read()
            except FileNotFoundError:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            first_line = 1 + self._line_numbers.get(path, 0)
            text = complete.decode(errors="replace")
            hits += self.scan_text(text, str(path), first_line)
            self._line_numbers[path] = first_line - 1 + text.count("\n")
        return hits

    def scan_text(self, text: str, where: str, first_line: int = 1) -> list[Hit]:
        """Every canary in ``text``, located as ``where:line``."""
        hits = []
        lines = text.splitlines()
        self.lines += len(lines)
        for number, line in enumerate(lines, first_line):
            masked, found = mask(self.canaries, line)
            for label, position in found:
                excerpt = masked[max(0, position - 80) : position + 160]
                hits.append(Hit(f"{where}:{number}", label, excerpt))
        return hits

    def scan_envelopes(self, envelopes: Iterable[bytes], where: str, first: int = 0) -> list[Hit]:
        """Every canary in Sentry envelopes (header and items), counting the event items;
        ``first`` is the number of the first envelope (for the location)."""
        hits = []
        for index, raw in enumerate(envelopes, first):
            self.envelopes += 1
            text = raw.decode(errors="replace")
            for line in text.splitlines():
                try:
                    if json.loads(line).get("type") == "event":
                        self.events += 1
                except (ValueError, AttributeError):
                    pass
            lines_before = self.lines
            hits += self.scan_text(text, f"{where} envelope {index}")
            self.lines = lines_before  # envelope lines are counted as events, not log lines
        return hits
