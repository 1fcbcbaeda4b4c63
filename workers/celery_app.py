"""The Celery app the worker and beat processes run (``celery -A workers.celery_app``).

Importing this module reads the settings from the environment; a bad one stops the process
with one line naming it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import signals

from config.logging import configure_logging, redact_every_handler
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


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _keep_callrec_logging(logger: logging.Logger, **_: Any) -> None:
    """After Celery's logging set-up (worker, beat): ``CALLREC_LOG_LEVEL`` wins over the
    ``--loglevel`` flag Celery applied, and the handlers Celery added (``celery.task``,
    ``multiprocessing``) redact as ours does."""
    logger.setLevel(settings.log_level.upper())
    redact_every_handler()


configure_sentry(settings, "worker")
app = make_celery(settings)
