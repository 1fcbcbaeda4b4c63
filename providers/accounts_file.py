"""The accounts file (``CALLREC_ACCOUNTS_FILE``): several accounts per provider, in TOML.

::

    [[accounts]]
    provider = "telnyx"
    name = "east"                          # [a-z0-9][a-z0-9_-]{0,63}: a URL and key segment
    api_base = "https://api.telnyx.com/v2" # optional: CALLREC_TELNYX_API_BASE
    audio_hosts = ["*.amazonaws.com"]      # optional: CALLREC_TELNYX_AUDIO_HOSTS
    poll = true                            # optional: list this account on a schedule
    poll_interval_seconds = 600            # optional: CALLREC_POLL_INTERVAL_SECONDS
    credentials = { api_key_env = "TELNYX_EAST_API_KEY", public_key_env = "TELNYX_EAST_PUBKEY" }
    options = { format = "wav" }           # optional: CALLREC_TELNYX_FORMAT

A credential is given inline (``api_key = "…"``) or, better, as the name of the environment
variable holding it (``api_key_env = "…"``): the file then holds no secret. Values are parsed by
the same parsers as the ``CALLREC_<PROVIDER>_*`` settings. Every error names the file, the
account and the field, and stops the process at start-up like a bad setting does.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.settings import ConfigError, Settings, parse_as
from providers.base import Account, Provider

__all__ = ["ACCOUNT_NAME_RE", "load_accounts_file"]

#: Account names become URL path segments, ledger keys and storage key segments.
ACCOUNT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_KEYS = frozenset(
    {
        "provider",
        "name",
        "api_base",
        "audio_hosts",
        "poll",
        "poll_interval_seconds",
        "credentials",
        "options",
    }
)
_MIN_POLL_INTERVAL = 10


class _Invalid(ValueError):
    """A bad field: ``field`` and a message, turned into one ConfigError line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def load_accounts_file(
    path: str, settings: Settings, providers: Mapping[str, type[Provider]]
) -> list[Account]:
    """Every account the file lists; ``ConfigError`` naming file, account and field if bad."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the accounts file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    extra = set(document) - {"accounts"}
    if extra:
        raise ConfigError(
            f"{path}: unknown top-level key(s) {sorted(extra)}; expected [[accounts]]"
        )
    entries = document.get("accounts", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: accounts must be an array of tables ([[accounts]])")
    accounts: list[Account] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries):
        where = f"accounts[{index}]"
        if isinstance(entry, dict) and isinstance(entry.get("provider"), str):
            where = f"account {entry['provider']}/{entry.get('name', '?')}"
        try:
            account = _account(entry, settings, providers)
        except _Invalid as exc:
            raise ConfigError(f"{path}: {where}: {exc.field}: {exc}") from None
        if (account.provider, account.name) in seen:
            raise ConfigError(f"{path}: {where}: name: listed twice")
        seen.add((account.provider, account.name))
        accounts.append(account)
    return accounts


def _account(entry: Any, settings: Settings, providers: Mapping[str, type[Provider]]) -> Account:
    if not isinstance(entry, dict):
        raise _Invalid("accounts", "each entry must be a table")
    unknown = set(entry) - _KEYS
    if unknown:
        raise _Invalid(sorted(unknown)[0], f"unknown key; expected one of {sorted(_KEYS)}")
    provider = entry.get("provider")
    if not isinstance(provider, str) or provider not in providers:
        raise _Invalid("provider", f"expected one of {sorted(providers)}, got {provider!r}")
    cls = providers[provider]
    name = entry.get("name")
    if not isinstance(name, str) or not ACCOUNT_NAME_RE.fullmatch(name):
        raise _Invalid("name", "expected lower-case letters, digits, '-' or '_' (max 64)")
    credentials, sources = _credentials(entry.get("credentials", {}), cls)
    options = _options(entry.get("options", {}), cls, settings)
    sources.update({key: f"options.{key}" for key in options})
    return Account(
        provider=provider,
        name=name,
        api_base=_parsed(entry, "api_base", f"{provider}_api_base", settings),
        audio_hosts=_audio_hosts(entry, provider, settings),
        credentials=credentials,
        options=options,
        sources={key: f"{provider}/{name} {value}" for key, value in sources.items()},
        polled=_poll(entry),
        poll_interval_seconds=_interval(entry),
    )


def _credentials(raw: Any, cls: type[Provider]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Inline values or ``<field>_env`` names of environment variables, per credential."""
    if not isinstance(raw, dict):
        raise _Invalid("credentials", "must be a table")
    allowed = {*cls.credential_fields, *(f"{field}_env" for field in cls.credential_fields)}
    unknown = set(raw) - allowed
    if unknown:
        raise _Invalid(f"credentials.{sorted(unknown)[0]}", f"expected one of {sorted(allowed)}")
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for field in cls.credential_fields:
        inline, env = raw.get(field), raw.get(f"{field}_env")
        if inline is not None and env is not None:
            raise _Invalid(f"credentials.{field}", f"give {field} or {field}_env, not both")
        if env is not None:
            if not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
                raise _Invalid(f"credentials.{field}_env", "must name an environment variable")
            value = os.environ.get(env, "").strip()
            if not value:
                raise _Invalid(f"credentials.{field}_env", f"environment variable {env} is not set")
            values[field], sources[field] = value, f"env {env}"
        elif inline is not None:
            if not isinstance(inline, str) or not inline.strip():
                raise _Invalid(f"credentials.{field}", "must be a non-empty string")
            values[field], sources[field] = inline.strip(), f"credentials.{field}"
        else:
            values[field], sources[field] = None, f"credentials.{field}_env"
    return values, sources


def _options(raw: Any, cls: type[Provider], settings: Settings) -> dict[str, str]:
    """Provider options; missing ones default to the provider's ``CALLREC_<P>_<OPTION>``."""
    if not isinstance(raw, dict):
        raise _Invalid("options", "must be a table")
    unknown = set(raw) - set(cls.option_fields)
    if unknown:
        raise _Invalid(
            f"options.{sorted(unknown)[0]}", f"expected one of {sorted(cls.option_fields)}"
        )
    options: dict[str, str] = {}
    for field in cls.option_fields:
        setting = f"{cls.name}_{field}"
        if field in raw:
            options[field] = str(_parse(f"options.{field}", setting, raw[field]))
        else:
            options[field] = str(getattr(settings, setting))
    return options


def _parsed(entry: Mapping[str, Any], key: str, setting: str, settings: Settings) -> Any:
    if key not in entry:
        return getattr(settings, setting)
    return _parse(key, setting, entry[key])


def _audio_hosts(entry: Mapping[str, Any], provider: str, settings: Settings) -> tuple[str, ...]:
    raw = entry.get("audio_hosts")
    if isinstance(raw, list):
        if not raw or not all(isinstance(host, str) for host in raw):
            raise _Invalid("audio_hosts", "must be a non-empty list of host strings")
        raw = ",".join(raw)
    hosts: tuple[str, ...] = _parsed(
        {} if raw is None else {"audio_hosts": raw},
        "audio_hosts",
        f"{provider}_audio_hosts",
        settings,
    )
    if not hosts:
        raise _Invalid("audio_hosts", "must list at least one host")
    return hosts


def _parse(field: str, setting: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise _Invalid(field, f"must be a string, got {type(value).__name__}")
    try:
        return parse_as(setting, value)
    except ValueError as exc:
        raise _Invalid(field, str(exc)) from None


def _poll(entry: Mapping[str, Any]) -> bool:
    value = entry.get("poll", True)
    if not isinstance(value, bool):
        raise _Invalid("poll", "must be true or false")
    return value


def _interval(entry: Mapping[str, Any]) -> int | None:
    value = entry.get("poll_interval_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < _MIN_POLL_INTERVAL:
        raise _Invalid("poll_interval_seconds", f"must be an integer >= {_MIN_POLL_INTERVAL}")
    return value
