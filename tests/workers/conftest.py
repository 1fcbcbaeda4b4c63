"""Fixtures of the worker tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from config.settings import Settings
from workers.celery_config import make_celery


@pytest.fixture
def app(settings: Settings) -> Iterator[Celery]:
    """callrec's Celery app for the requesting module's ``settings`` fixture."""
    celery = make_celery(settings)
    yield celery
    celery.close()
