"""``GET /metrics``: Prometheus text of every process sharing ``CALLREC_METRICS_DIR`` (this web
process, its gunicorn siblings and the host's Celery workers) and the ledger gauges."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from config.metrics import LedgerCollector, scrape

__all__ = ["metrics_view"]

metrics_view = Blueprint("metrics", __name__)


@metrics_view.get("/metrics")
def expose() -> Response:
    from ingest.app import state

    current = state()
    ledger = LedgerCollector(current.sessions, current.settings.metrics_missing_after_minutes)
    return Response(scrape(current.settings, ledger), content_type=CONTENT_TYPE_LATEST)
