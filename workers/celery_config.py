"""The Celery app factory: the wake-up call, never the truth (that is the ledger).

Reliability settings, and why:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a task whose worker dies is redelivered
  (on brokers that can); loops are bounded by the ledger's attempt count, not by Celery.
* ``worker_prefetch_multiplier=1``: a capture can take minutes; never hoard messages.
* ``task_time_limit`` < ``STUCK_AFTER`` (the ledger lease) and < Redis ``visibility_timeout``,
  so a redelivered or re-driven task never meets a still-running first attempt.
* JSON only; task arguments are ledger ids (or a provider and account name), never URLs or
  payloads.
* Queues ``<prefix>.capture``, ``<prefix>.capture.backfill`` (captures of rows a backfill
  found: ``ledger.publish`` picks the lane from the row), ``<prefix>.sweep`` and
  ``<prefix>.poll`` (reconciliation), so neither a long poll nor a backfill's thousands of
  captures queue ahead of a fresh recording; a worker without ``-Q`` consumes all four.
* Broadcasts are per prefix too: the control exchange is ``<prefix>`` (fanout
  ``<prefix>.pidbox``, replies on ``reply.<prefix>.pidbox``) and events go to
  ``<prefix>.events``, not Celery's shared ``celery``/``celeryev``. Two deployments on one
  broker (distinct ``CALLREC_QUEUE_PREFIX``) then never hear each other's ``celery control
  shutdown``, Flower's inspections, a worker's start-up ``mingle`` or its events.
"""

from __future__ import annotations

from pathlib import Path

from celery import Celery
from kombu import Exchange, Queue

from config.settings import Settings
from ledger.publish import Lane

__all__ = [
    "QUEUE_SUFFIXES",
    "backfill_queue",
    "broadcast_exchanges",
    "capture_queue",
    "capture_queue_of",
    "make_celery",
    "poll_queue",
    "redis_restore_options",
    "sweep_queue",
]


def broadcast_exchanges(prefix: str) -> tuple[str, ...]:
    """The exchanges a deployment with queue prefix ``prefix`` broadcasts on (control
    commands, their replies, events): on RabbitMQ they outlive the workers that declared them."""
    return f"{prefix}.pidbox", f"reply.{prefix}.pidbox", f"{prefix}.events"


#: Every queue callrec declares is ``CALLREC_QUEUE_PREFIX`` + ``.`` + one of these (each with an
#: exchange of the same name); tests and benchmarks drop them by this list.
QUEUE_SUFFIXES = ("capture", "capture.backfill", "sweep", "poll")


def capture_queue(settings: Settings) -> str:
    return f"{settings.queue_prefix}.capture"


def backfill_queue(settings: Settings) -> str:
    """Captures of backfilled rows: their own queue, so a backfill never delays a fresh URL."""
    return f"{settings.queue_prefix}.capture.backfill"


def capture_queue_of(settings: Settings, lane: Lane) -> str:
    """The queue of a capture wake-up in ``lane`` (``ledger.publish``)."""
    return backfill_queue(settings) if lane == "backfill" else capture_queue(settings)


def sweep_queue(settings: Settings) -> str:
    return f"{settings.queue_prefix}.sweep"


def poll_queue(settings: Settings) -> str:
    """Reconciliation polls: their own queue, so a long listing never delays a capture."""
    return f"{settings.queue_prefix}.poll"


def _poll_tick(settings: Settings) -> float:
    from providers.registry import configured_accounts
    from workers.reconcile import poll_tick_seconds

    return poll_tick_seconds(settings, list(configured_accounts(settings).values()))


def redis_restore_options(visibility_timeout: int) -> dict[str, int]:
    """Redis transport options that bring a dead worker's unacked task back in time.

    kombu restores an unacked message once it is older than ``visibility_timeout``, but only
    scans for such messages every ``unacked_restore_interval`` x ``unacked_restore_throttle``
    seconds (10 x 10 by default): a task whose worker was SIGKILLed came back up to 100 s
    after the timeout. One scan (a ZRANGE) every ``visibility_timeout / 10`` seconds, 1 to 10,
    keeps the delay under a tenth of the window.
    """
    return {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": max(1, min(10, visibility_timeout // 10)),
        "unacked_restore_throttle": 1,
    }


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def make_celery(settings: Settings) -> Celery:
    broker = settings.broker_url
    transport = None
    if broker.startswith("sqla+sqlite"):
        from workers.sqla_broker import TRANSPORT as SQLA_TRANSPORT

        Path(broker.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        # kombu's SQLAlchemy transport with batched publishing (workers/sqla_broker.py); the
        # class is named by broker_transport, as kombu never imports one named by a URL.
        broker, transport = broker.removeprefix("sqla+"), SQLA_TRANSPORT
    transport_options: dict[str, object] = {}
    if broker.startswith(("redis", "rediss")):
        transport_options.update(redis_restore_options(settings.broker_visibility_timeout_seconds))
    if broker.startswith(("amqp", "amqps")):
        transport_options["confirm_publish"] = True
    celery = Celery("callrec", broker=broker, include=["workers.tasks"])
    if broker.startswith("redis://"):  # survives a lost connection (see redis_transport.py)
        transport = "workers.redis_transport:Transport"
    if transport is not None:
        celery.conf.broker_transport = transport
    poll_tick = _poll_tick(settings)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_seconds,
        task_soft_time_limit=settings.soft_time_limit,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2,
        },
        # Each queue its own direct exchange and key: otherwise kombu binds both to the default
        # exchange with the same key and every message lands in both queues.
        task_queues=[
            _queue(capture_queue(settings)),
            _queue(backfill_queue(settings)),
            _queue(sweep_queue(settings)),
            _queue(poll_queue(settings)),
        ],
        task_default_queue=capture_queue(settings),
        control_exchange=settings.queue_prefix,
        event_exchange=f"{settings.queue_prefix}.events",
        task_routes={
            "callrec.capture": {"queue": capture_queue(settings)},
            "callrec.sweep": {"queue": sweep_queue(settings)},
            "callrec.schedule_polls": {"queue": poll_queue(settings)},
            "callrec.poll": {"queue": poll_queue(settings)},
        },
        beat_schedule={
            "sweep": {
                "task": "callrec.sweep",
                "schedule": float(settings.sweep_interval_seconds),
                "options": {"expires": float(settings.sweep_interval_seconds)},
            },
            # Every tick enqueues the polls that are due (ledger-decided: safe with two beats).
            "schedule-polls": {
                "task": "callrec.schedule_polls",
                "schedule": poll_tick,
                "options": {"expires": poll_tick},
            },
        },
        beat_schedule_filename=str(Path.cwd() / "var" / "celerybeat-schedule"),
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    return celery
