"""The WSGI entry point gunicorn serves (``gunicorn ingest.wsgi:app``)."""

import sys

from config.logging import configure_logging
from config.sentry import configure_sentry
from config.settings import ConfigError, load_settings
from ingest.app import create_app
from providers.registry import configured_accounts

try:
    settings = load_settings()
    configured_accounts(settings)  # a bad accounts file stops the process here, in one line
except ConfigError as exc:
    print(f"callrec: bad configuration: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

configure_logging(settings.log_level, settings.log_format)
configure_sentry(settings, "web")
app = create_app(settings)
