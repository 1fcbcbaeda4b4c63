"""Per-process state a worker (or the web process) builds once: ledger, HTTP, providers, storage.

Built lazily, after the fork, so no connection or thread crosses a process boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.metrics import configure_metrics
from config.settings import Settings
from ledger import make_engine, make_session_factory
from ledger.publish import CaptureBatch, SendCapture, publish_and_record
from ledger.sweeper import Lane
from providers.http import new_http_client
from providers.registry import Accounts
from storage import Storage, storage_from_url

__all__ = ["Runtime", "build_runtime"]


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    http: httpx.Client
    accounts: Accounts
    storage: Storage
    send_capture: SendCapture
    #: Sends many wake-ups at once (one producer, one broker transaction where the broker
    #: allows it); None: one ``send_capture`` call each.
    capture_batch: CaptureBatch | None = None
    #: Ready messages per capture lane's queue (None: the broker cannot tell); the sweeper
    #: reads it before republishing stale rows. None here: every stale row counts as lost.
    queue_depths: Callable[[], Mapping[Lane, int] | None] | None = None

    def publish(
        self, ids: Sequence[int], countdown: float | None = None, due: datetime | None = None
    ) -> list[int]:
        """Wake workers for these rows; a broker failure leaves them to the sweeper."""
        return publish_and_record(
            self.send_capture, self.sessions, ids, countdown, due, batch=self.capture_batch
        )

    def close(self) -> None:
        self.http.close()
        self.engine.dispose()


def build_runtime(
    settings: Settings,
    send_capture: SendCapture,
    capture_batch: CaptureBatch | None = None,
    queue_depths: Callable[[], Mapping[Lane, int] | None] | None = None,
) -> Runtime:
    configure_metrics(settings)
    engine = make_engine(settings.database_url)
    http = new_http_client(settings.http_timeout_seconds)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        http=http,
        accounts=Accounts(settings, http),
        storage=storage_from_url(
            settings.storage_url,
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_region=settings.s3_region,
            part_size=settings.s3_part_size_bytes,
        ),
        send_capture=send_capture,
        capture_batch=capture_batch,
        queue_depths=queue_depths,
    )
