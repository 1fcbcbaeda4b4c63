"""Every setting callrec reads, declared once, loaded from the environment in one place.

Each setting has an env name (prefix ``CALLREC_``), a parser, a default and a line of help. The
README's configuration table is generated from these declarations (``python -m config``) and a
test keeps the two in step. A bad value stops the process with one line naming the env var.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ConfigError",
    "Settings",
    "declared_settings",
    "env_name",
    "load_settings",
    "parse_as",
]

PREFIX = "CALLREC_"


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the env var."""


def _str(raw: str) -> str:
    return raw.strip()


def _optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _optional_digits(raw: str) -> str | None:
    value = raw.strip()
    if value and not (value.isascii() and value.isdigit()):
        raise ValueError(f"expected an integer id, got {raw!r}")
    return value or None


def _basic_auth(raw: str) -> str | None:
    """``user:password`` (both non-empty; the password may hold ``:``), or empty for none."""
    value = raw.strip()
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not (sep and user and password):
        raise ValueError("expected user:password with both parts non-empty")
    return value


def _int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = "" if maximum is None else f" and <= {maximum}"
            raise ValueError(f"must be >= {minimum}{upper}, got {value}")
        return value

    return parse


def _float(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _host_list(raw: str) -> tuple[str, ...]:
    """Comma-separated ``host`` or ``host:port`` entries, lower-cased; ``*.suffix`` allowed."""
    entries = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    for entry in entries:
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if port and not port.isdigit():
            raise ValueError(f"bad port in host entry {entry!r}")
        if not host or "/" in host or "@" in host:
            raise ValueError(f"expected host or host:port, got {entry!r}")
    return entries


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _http_base(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"expected an http(s) URL, got {raw!r}")
    return value


def _public_base(raw: str) -> str | None:
    value = raw.strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path:
        raise ValueError(f"expected scheme://host[:port] with no path, got {raw!r}")
    return value


def _storage_url(raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme == "file":
        if parts.netloc not in {"", "localhost"} or not parts.path.startswith("/"):
            raise ValueError(f"expected file:///absolute/path, got {raw!r}")
    elif parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"expected s3://bucket/prefix, got {raw!r}")
    else:
        raise ValueError(f"expected file:///abs/path or s3://bucket/prefix, got {raw!r}")
    return value


def _database_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("sqlite", "postgresql")):
        raise ValueError(f"expected a sqlite:/// or postgresql:// URL, got a {value[:12]!r}… URL")
    if value.startswith("postgresql://"):
        value = "postgresql+psycopg://" + value[len("postgresql://") :]
    return value


def _broker_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("sqla+sqlite", "redis://", "rediss://", "amqp://", "amqps://")):
        raise ValueError("expected sqla+sqlite:///, redis:// or amqp:// URL")
    return value


def _basic_auth_list(raw: str) -> str | None:
    """One or more ``user:password`` pairs, comma-separated (Flower's format), or empty."""
    value = raw.strip()
    for pair in filter(None, value.split(",")):
        try:
            _basic_auth(pair)
        except ValueError:
            raise ValueError("expected user:password (comma-separated for several)") from None
    return value or None


def _var_path(*parts: str) -> Callable[[], str]:
    """A default under ``./var`` of the working directory (the embedded mode)."""
    return lambda: str(Path.cwd().joinpath("var", *parts))


def setting(
    parse: Callable[[str], Any],
    default: str | Callable[[], str],
    help: str,
    *,
    secret: bool = False,
) -> Any:
    """Declare one settings field: parser of the raw env text, raw default, one line of help."""
    return field(metadata={"parse": parse, "default": default, "help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """The loaded, validated settings. Field ``foo_bar`` is read from ``CALLREC_FOO_BAR``."""

    database_url: str = setting(
        _database_url,
        lambda: f"sqlite:///{_var_path('ledger.sqlite')()}",
        "Ledger database: `sqlite:///path` (default, embedded) or `postgresql://…`.",
    )
    broker_url: str = setting(
        _broker_url,
        lambda: f"sqla+sqlite:///{_var_path('broker.sqlite')()}",
        "Celery broker: `sqla+sqlite:///path` (default, embedded), `redis://…` or `amqp://…`.",
    )
    storage_url: str = setting(
        _storage_url,
        lambda: f"file://{_var_path('recordings')()}",
        "Where recordings go: `file:///abs/path` or `s3://bucket/prefix`.",
    )
    s3_endpoint_url: str | None = setting(
        _optional_str, "", "S3 endpoint override (moto, MinIO); empty means AWS."
    )
    s3_region: str = setting(_str, "us-east-1", "S3 region.")
    s3_part_size_bytes: int = setting(
        _int(5 * 1024 * 1024, 5 * 1024**3),
        str(8 * 1024 * 1024),
        "Multipart part size; also the upload buffer of one capture (the memory bound).",
    )
    queue_prefix: str = setting(
        _str,
        "callrec",
        "Prefix of the Celery queue names (`<prefix>.capture`, `<prefix>.capture.backfill`, "
        "`<prefix>.sweep`, `<prefix>.poll`) and of the control and event exchanges "
        "(`<prefix>.pidbox`, `<prefix>.events`): deployments sharing a broker need distinct "
        "prefixes.",
    )
    public_base_url: str | None = setting(
        _public_base,
        "",
        "Public base URL (`scheme://host[:port]`) providers call; route paths are appended.",
    )
    trust_proxy_hops: int = setting(
        _int(0, 10),
        "0",
        "Reverse proxies in front of `web` whose `X-Forwarded-For/Proto/Host/Port` are trusted "
        "(werkzeug ProxyFix) to rebuild the public URL Twilio signs; 0 ignores those headers.",
    )
    max_body_bytes: int = setting(
        _int(1024), str(256 * 1024), "Largest webhook body accepted; larger gets 413."
    )
    status_basic_auth: str | None = setting(
        _basic_auth,
        "",
        "`user:password` of the web status page `/status` (HTTP basic auth); empty turns the "
        "page off (404).",
        secret=True,
    )
    readyz_timeout_seconds: float = setting(
        _float(0.1),
        "2",
        "Time limit of each `/readyz` check (ledger, broker, storage); slower counts as down.",
    )
    flower_basic_auth: str | None = setting(
        _basic_auth_list,
        "",
        "Flower's HTTP basic auth, `user:password` (comma-separated for several); required "
        "when Flower listens on a non-loopback address.",
        secret=True,
    )
    poll_interval_seconds: int = setting(
        _int(10),
        "300",
        "How often each account's list API is polled (an account may set its own interval).",
    )
    poll_lookback_seconds: int = setting(
        _int(60), "86400", "How far back the first poll of an account looks."
    )
    poll_overlap_seconds: int = setting(
        _int(0),
        "300",
        "How much each poll re-reads behind the account's watermark (late-listed recordings).",
    )
    accounts_file: str | None = setting(
        _optional_str,
        "",
        "TOML file of provider accounts (several per provider); the `CALLREC_<PROVIDER>_*` "
        "settings stay the shorthand for each provider's `default` account.",
    )
    relay_interval_seconds: float = setting(
        _float(0.01),
        "0.2",
        "How long the relay waits between rounds unless its last batch was full: a new row "
        "waits about this long for its wake-up.",
    )
    sweep_interval_seconds: int = setting(
        _int(1), "30", "How often the sweeper publishes unpublished, due and stuck ledger rows."
    )
    stuck_after_seconds: int = setting(
        _int(3),
        "600",
        "A row not final this long after its last publish or claim is re-driven; "
        "must exceed the task time limit.",
    )
    task_time_limit_seconds: int = setting(
        _int(2), "540", "Hard time limit of one capture attempt (the soft limit is 10% earlier)."
    )
    shutdown_grace_seconds: float = setting(
        _float(0.0),
        "8",
        "On a worker's SIGTERM, how long running captures may go on before they are released "
        "to another worker (set below your stop timeout, e.g. docker's 10 s).",
    )
    broker_visibility_timeout_seconds: int = setting(
        _int(10),
        "900",
        "Redis redelivery window for unacknowledged tasks; must exceed the task time limit.",
    )
    max_attempts: int = setting(
        _int(1, 100), "8", "Capture attempts before a recording is marked failed."
    )
    storage_outage_max_seconds: int = setting(
        _int(0),
        "86400",
        "How long after it was accepted a recording may wait out storage outages (S3 "
        "unreachable, timing out, 5xx) without those attempts counting against MAX_ATTEMPTS.",
    )
    retry_base_seconds: float = setting(
        _float(0.0),
        "2",
        "First retry delay; doubles each attempt, with jitter, up to RETRY_MAX_SECONDS.",
    )
    retry_max_seconds: float = setting(_float(0.0), "300", "Longest delay between two attempts.")
    url_refreshes: int = setting(
        _int(0, 20),
        "3",
        "Fresh audio URLs fetched within one attempt after an expired or cut download.",
    )
    http_timeout_seconds: float = setting(
        _float(0.1), "30", "Connect and read timeout of provider API and audio requests."
    )
    max_recording_bytes: int = setting(
        _int(1), str(4 * 1024**3), "Largest recording accepted; a bigger one fails permanently."
    )
    log_level: str = setting(_choice("debug", "info", "warning", "error"), "info", "Log level.")
    log_format: str = setting(
        _choice("json", "text", "auto"),
        "auto",
        "`json`, `text`, or `auto` (text on a terminal, JSON otherwise).",
    )
    metrics_dir: str | None = setting(
        _optional_str,
        _var_path("metrics"),
        "Directory shared by the processes of one host for Prometheus metrics (multiprocess "
        "mode; files of exited processes are folded into an archive at start-up); empty: this "
        "process only.",
    )
    metrics_missing_after_minutes: int = setting(
        _int(1),
        "60",
        "A recording announced or listed this long ago and not stored counts as expected but "
        "missing (`callrec_recordings_missing`).",
    )
    worker_metrics_port: int = setting(
        _int(0, 65535),
        "0",
        "Port of the worker's own `/metrics` exporter on 127.0.0.1 (the metrics directory); "
        "0: off (the web `/metrics` of the same host serves the workers' metrics).",
    )
    sentry_dsn: str | None = setting(
        _optional_str, "", "Sentry DSN; empty disables Sentry.", secret=True
    )
    telnyx_api_key: str | None = setting(
        _optional_str, "", "Telnyx API key (sent as Bearer).", secret=True
    )
    telnyx_public_key: str | None = setting(
        _optional_str,
        "",
        "Telnyx webhook public key, base64 Ed25519 (Mission Control, Keys & Credentials).",
    )
    telnyx_api_base: str = setting(_http_base, "https://api.telnyx.com/v2", "Telnyx API base URL.")
    telnyx_audio_hosts: tuple[str, ...] = setting(
        _host_list,
        "*.amazonaws.com,*.telnyx.com",
        "Hosts audio may come from: `host`, `host:port` or `*.suffix`, comma-separated.",
    )
    telnyx_format: str = setting(_choice("mp3", "wav"), "mp3", "Audio format captured from Telnyx.")
    quo_api_key: str | None = setting(
        _optional_str,
        "",
        "Quo (OpenPhone) API key (sent as `Authorization: <key>`, no Bearer).",
        secret=True,
    )
    quo_signing_key: str | None = setting(
        _optional_str,
        "",
        "Quo legacy webhook signing key, base64 (`openphone-signature`; the app's signing secret).",
        secret=True,
    )
    quo_webhook_secret: str | None = setting(
        _optional_str,
        "",
        "Quo Standard Webhooks secret, `whsec_…` (webhooks created with the 2026-03-30 API).",
        secret=True,
    )
    quo_api_base: str = setting(_http_base, "https://api.openphone.com", "Quo API base URL.")
    quo_audio_hosts: tuple[str, ...] = setting(
        _host_list,
        "storage.googleapis.com,*.storage.googleapis.com",
        "Hosts Quo audio may come from: `host`, `host:port` or `*.suffix`, comma-separated.",
    )
    twilio_account_sid: str | None = setting(
        _optional_str, "", "Twilio Account SID (`AC…`): API path and HTTP Basic user."
    )
    twilio_auth_token: str | None = setting(
        _optional_str,
        "",
        "Twilio auth token: verifies `X-Twilio-Signature`; HTTP Basic password.",
        secret=True,
    )
    twilio_api_base: str = setting(_http_base, "https://api.twilio.com", "Twilio API base URL.")
    twilio_audio_hosts: tuple[str, ...] = setting(
        _host_list,
        "*.twilio.com",
        "Hosts Twilio audio may come from (the media URL is on the API host), as for Telnyx.",
    )
    twilio_format: str = setting(
        _choice("wav", "mp3"),
        "wav",
        "Audio format captured from Twilio; encrypted recordings are always captured as wav.",
    )
    voicegenie_api_key: str | None = setting(
        _optional_str, "", "VoiceGenie API key (sent as `x-api-key`).", secret=True
    )
    voicegenie_api_base: str = setting(
        _http_base, "https://api.voicegenie.com", "VoiceGenie API base URL."
    )
    voicegenie_audio_hosts: tuple[str, ...] = setting(
        _host_list,
        "*.s3.amazonaws.com",
        "Hosts VoiceGenie audio may come from (its `recording_url`s are S3 virtual-hosted "
        "`<bucket>.s3.amazonaws.com`); add regional S3 hosts if the URLs name a region.",
    )
    voxo_api_base: str = setting(_http_base, "https://api.voxo.co", "VOXO API base URL.")
    voxo_email: str | None = setting(
        _optional_str, "", "VOXO API user's email (`POST /authentication`, strategy `local`)."
    )
    voxo_password: str | None = setting(
        _optional_str, "", "VOXO API user's password (exchanged for a Bearer token).", secret=True
    )
    voxo_tenant_id: str | None = setting(
        _optional_digits, "", "VOXO tenant (account) id, an integer: `tenantId` of every call."
    )
    voxo_audio_hosts: tuple[str, ...] = setting(
        _host_list,
        "*.amazonaws.com",
        "Hosts VOXO audio may come from (presigned S3 URLs, `global-recordings.s3.amazonaws.com`).",
    )

    @property
    def soft_time_limit(self) -> int:
        """Soft limit of one capture attempt: 10% (at least 1 s) before the hard limit."""
        return self.task_time_limit_seconds - max(1, self.task_time_limit_seconds // 10)

    def as_env(self) -> dict[str, str]:
        """The settings as env vars again (for child processes)."""
        out: dict[str, str] = {}
        for declared in fields(self):
            value = getattr(self, declared.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            out[env_name(declared.name)] = "" if value is None else str(value)
        return out


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def parse_as(field_name: str, raw: str) -> Any:
    """Parse ``raw`` with the parser of setting ``field_name`` (``ValueError`` if invalid).

    The accounts file reuses these, so ``api_base = …`` in it means what
    ``CALLREC_<PROVIDER>_API_BASE`` means.
    """
    declared = {f.name: f for f in fields(Settings)}.get(field_name)
    if declared is None:
        raise KeyError(field_name)
    return declared.metadata["parse"](raw)


def declared_settings() -> list[tuple[str, str, str, bool]]:
    """(env name, default text, help, secret) of every setting, in declaration order."""
    rows = []
    for declared in fields(Settings):
        meta = declared.metadata
        default = meta["default"]() if callable(meta["default"]) else meta["default"]
        rows.append((env_name(declared.name), default, meta["help"], meta["secret"]))
    return rows


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad env var."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for declared in fields(Settings):
        meta = declared.metadata
        name = env_name(declared.name)
        raw = env.get(name)
        if raw is None:
            raw = meta["default"]() if callable(meta["default"]) else meta["default"]
        try:
            values[declared.name] = meta["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    settings = Settings(**values)
    _check_relations(settings)
    return settings


def _check_relations(s: Settings) -> None:
    if s.stuck_after_seconds <= s.task_time_limit_seconds:
        raise ConfigError(
            f"{PREFIX}STUCK_AFTER_SECONDS ({s.stuck_after_seconds}) must exceed "
            f"{PREFIX}TASK_TIME_LIMIT_SECONDS ({s.task_time_limit_seconds})"
        )
    if s.broker_visibility_timeout_seconds <= s.task_time_limit_seconds:
        raise ConfigError(
            f"{PREFIX}BROKER_VISIBILITY_TIMEOUT_SECONDS ({s.broker_visibility_timeout_seconds}) "
            f"must exceed {PREFIX}TASK_TIME_LIMIT_SECONDS ({s.task_time_limit_seconds})"
        )
    if s.retry_max_seconds >= s.broker_visibility_timeout_seconds:
        raise ConfigError(
            f"{PREFIX}RETRY_MAX_SECONDS must be below {PREFIX}BROKER_VISIBILITY_TIMEOUT_SECONDS"
        )
