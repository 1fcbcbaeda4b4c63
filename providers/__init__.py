"""Provider modules (one per provider) behind the interface in ``providers.base``."""
