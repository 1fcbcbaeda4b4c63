"""``callrec keys``: the webhook URL of every account, and which of its secrets are set.

Values are never printed: only "set" or "NOT SET" and where each one is read from.
"""

from __future__ import annotations

import click

from callrec_commands.common import settings

__all__ = ["keys", "webhook_url"]


def webhook_url(base: str | None, provider: str, account: str) -> str:
    from providers.registry import DEFAULT_ACCOUNT

    path = f"/webhooks/{provider}" + ("" if account == DEFAULT_ACCOUNT else f"/{account}")
    return (base or "") + path


@click.command()
def keys() -> None:
    """Print each account's webhook URL (from CALLREC_PUBLIC_BASE_URL) and which credentials
    are set, never their values."""
    from providers.registry import PROVIDERS, configured_accounts

    loaded = settings()
    if loaded.public_base_url is None:
        click.echo(
            "CALLREC_PUBLIC_BASE_URL is not set: prefix these paths with your public "
            "https://host (Twilio signs the full URL)",
            err=True,
        )
    for (provider, name), account in sorted(configured_accounts(loaded).items()):
        cls = PROVIDERS[provider]
        if cls.webhook_content_types:
            where = webhook_url(loaded.public_base_url, provider, name)
        else:
            where = "no webhooks (polled only)"
        configured = any(account.credentials.values())
        click.echo(f"{provider}/{name}  {where}" + ("" if configured else "  (not configured)"))
        for field in cls.credential_fields:
            state = "set" if account.credentials.get(field) else "NOT SET"
            click.echo(f"    {field:<16} {state:<8} {account.sources.get(field, '')}")
