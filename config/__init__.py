"""Settings, logging and Sentry set-up: everything read from the environment lives here."""

from config.settings import ConfigError, Settings, declared_settings, env_name, load_settings

__all__ = ["ConfigError", "Settings", "declared_settings", "env_name", "load_settings"]
