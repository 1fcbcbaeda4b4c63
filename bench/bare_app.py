"""The receiver benchmark's baseline: bare Flask routes that only verify the provider's signature.

Same settings (``CALLREC_*``), same provider objects and the same ``verify`` as callrec's
``POST /webhooks/<provider>``, then ``{"status": "accepted"}``: no parsing, no ledger, no
publish, no logging (``bench/baseline_app.py``). Serve it with ``gunicorn bench.bare_app:app``.
"""

from __future__ import annotations

from flask import Flask

from bench.baseline_app import verifying_app
from config.settings import load_settings

__all__ = ["app", "create_bare_app"]


def create_bare_app() -> Flask:
    """The verify-only app."""
    return verifying_app("callrec-bench-bare", load_settings())


app = create_bare_app()
