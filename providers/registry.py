"""Which providers exist, and the accounts configured for each.

Each provider has a ``default`` account from the single-account env shorthand
(``CALLREC_<PROVIDER>_<FIELD>``); the accounts file (``CALLREC_ACCOUNTS_FILE``,
``providers/accounts_file.py``) adds more, and an account it names ``default`` replaces the
shorthand one for that provider.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from config.settings import Settings, env_name
from providers.accounts_file import load_accounts_file
from providers.base import Account, Provider
from providers.quo import QuoProvider
from providers.telnyx import TelnyxProvider
from providers.twilio import TwilioProvider
from providers.voicegenie import VoiceGenieProvider
from providers.voxo import VoxoProvider

__all__ = ["DEFAULT_ACCOUNT", "PROVIDERS", "Accounts", "UnknownAccount", "configured_accounts"]

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

    credentials = {field: read(field) for field in cls.credential_fields}
    return Account(
        provider=cls.name,
        name=DEFAULT_ACCOUNT,
        api_base=str(getattr(settings, f"{cls.name}_api_base")),
        audio_hosts=tuple(getattr(settings, f"{cls.name}_audio_hosts")),
        credentials=credentials,
        options={field: str(read(field)) for field in cls.option_fields},
        sources={
            field: env_name(f"{cls.name}_{field}")
            for field in (*cls.credential_fields, *cls.option_fields)
        },
        # The shorthand account of a provider nobody configured is not polled.
        polled=any(credentials.values()),
    )


def configured_accounts(settings: Settings) -> dict[tuple[str, str], Account]:
    """Every account by (provider, name): the env shorthand, then the accounts file.

    Raises ``ConfigError`` (naming the file, account and field) for a bad accounts file.
    """
    accounts = {
        (name, DEFAULT_ACCOUNT): _env_account(settings, cls) for name, cls in PROVIDERS.items()
    }
    if settings.accounts_file:
        for account in load_accounts_file(settings.accounts_file, settings, PROVIDERS):
            accounts[(account.provider, account.name)] = account
    return accounts


class Accounts:
    """Provider instances per (provider, account), built once per process and reused."""

    def __init__(self, settings: Settings, http: httpx.Client) -> None:
        self._http = http
        self._accounts = configured_accounts(settings)
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

    def account(self, provider: str, account: str = DEFAULT_ACCOUNT) -> Account:
        """The configured account, or ``UnknownAccount``."""
        try:
            return self._accounts[(provider, account)]
        except KeyError:
            raise UnknownAccount(f"unknown provider/account {provider}/{account}") from None
