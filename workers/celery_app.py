"""The Celery app the worker and beat processes run (``celery -A workers.celery_app``).

Importing this module reads the settings from the environment; a bad one stops the process
with one line naming it.
"""

from __future__ import annotations

import sys

from config.logging import configure_logging
from config.sentry import configure_sentry
from config.settings import ConfigError, Settings, load_settings
from providers.registry import configured_accounts
from workers.celery_config import make_celery

__all__ = ["app", "settings"]


def _load() -> Settings:
    try:
        settings = load_settings()
        configured_accounts(settings)  # a bad accounts file stops the process here, in one line
        return settings
    except ConfigError as exc:
        print(f"callrec: bad configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


settings = _load()
configure_logging(settings.log_level, settings.log_format)
configure_sentry(settings, "worker")
app = make_celery(settings)
