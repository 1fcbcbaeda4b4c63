"""Which providers exist, and the accounts configured for each.

Accounts come from the single-account env shorthand (``CALLREC_<PROVIDER>_<FIELD>``) for now;
the accounts file of the polling issue adds more without changing callers.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from config.settings import Settings, env_name
from providers.base import Account, Provider
from providers.quo import QuoProvider
from providers.telnyx import TelnyxProvider
from providers.twilio import TwilioProvider
from providers.voicegenie import VoiceGenieProvider
from providers.voxo import VoxoProvider

__all__ = ["DEFAULT_ACCOUNT", "PROVIDERS", "Accounts", "UnknownAccount"]

PROVIDERS: Mapping[str, type[Provider]] = {
    cls.name: cls
    for cls in (
        TelnyxProvider,
        QuoProvider,
        TwilioProvider,
        VoiceGenieProvider,
        VoxoProvider,
    )
}
DEFAULT_ACCOUNT = "default"


class UnknownAccount(LookupError):
    """No such provider, or no such account for it."""


def _env_account(settings: Settings, cls: type[Provider]) -> Account:
    def read(field: str) -> str | None:
        value = getattr(settings, f"{cls.name}_{field}")
        return value if value is None else str(value)

    return Account(
        provider=cls.name,
        name=DEFAULT_ACCOUNT,
        api_base=str(getattr(settings, f"{cls.name}_api_base")),
        audio_hosts=tuple(getattr(settings, f"{cls.name}_audio_hosts")),
        credentials={field: read(field) for field in cls.credential_fields},
        options={field: str(read(field)) for field in cls.option_fields},
        sources={
            field: env_name(f"{cls.name}_{field}")
            for field in (*cls.credential_fields, *cls.option_fields)
        },
    )


class Accounts:
    """Provider instances per (provider, account), built once per process and reused."""

    def __init__(self, settings: Settings, http: httpx.Client) -> None:
        self._http = http
        self._accounts: dict[tuple[str, str], Account] = {
            (name, DEFAULT_ACCOUNT): _env_account(settings, cls) for name, cls in PROVIDERS.items()
        }
        self._instances: dict[tuple[str, str], Provider] = {}

    def provider(self, provider: str, account: str = DEFAULT_ACCOUNT) -> Provider:
        key = (provider, account)
        instance = self._instances.get(key)
        if instance is None:
            if key not in self._accounts:
                raise UnknownAccount(f"unknown provider/account {provider}/{account}")
            instance = PROVIDERS[provider](self._accounts[key], self._http)
            self._instances[key] = instance
        return instance

    def accounts(self) -> list[Account]:
        return list(self._accounts.values())
