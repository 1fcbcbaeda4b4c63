"""The Celery settings callrec's correctness leans on (reliability.md §3)."""

from __future__ import annotations

from config.settings import load_settings
from workers.celery_config import (
    QUEUE_SUFFIXES,
    backfill_queue,
    broadcast_exchanges,
    capture_queue,
    capture_queue_of,
    make_celery,
    poll_queue,
    sweep_queue,
)


def test_reliability_settings() -> None:
    settings = load_settings({"CALLREC_BROKER_URL": "redis://127.0.0.1:6379/0"})
    conf = make_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_soft_time_limit < conf.task_time_limit < settings.stuck_after_seconds
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_time_limit < visibility
    assert settings.retry_max_seconds < visibility  # no countdown outlives the window


def test_redis_scans_for_a_dead_workers_tasks_often() -> None:
    """kombu's default scan period (100 s) would add up to 100 s to every redelivery."""
    for visibility, interval in ((12, 1), (60, 6), (900, 10)):
        settings = load_settings(
            {
                "CALLREC_BROKER_URL": "redis://127.0.0.1:6379/0",
                "CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS": str(visibility),
                "CALLREC_TASK_TIME_LIMIT_SECONDS": "5",
                "CALLREC_STUCK_AFTER_SECONDS": "8",
                "CALLREC_RETRY_MAX_SECONDS": "3",
            }
        )
        options = make_celery(settings).conf.broker_transport_options
        assert options["visibility_timeout"] == visibility
        assert options["unacked_restore_interval"] == interval
        assert options["unacked_restore_throttle"] == 1


def test_publisher_confirms_on_rabbitmq() -> None:
    settings = load_settings({"CALLREC_BROKER_URL": "amqp://guest:guest@127.0.0.1//"})
    assert make_celery(settings).conf.broker_transport_options == {"confirm_publish": True}


def test_each_queue_has_its_own_route() -> None:
    """Two queues bound to one exchange with one key would each get every message."""
    settings = load_settings({"CALLREC_QUEUE_PREFIX": "x"})
    queues = {q.name: q for q in make_celery(settings).conf.task_queues}
    capture, sweep = queues[capture_queue(settings)], queues[sweep_queue(settings)]
    assert (capture.exchange.name, capture.routing_key) == ("x.capture", "x.capture")
    assert (sweep.exchange.name, sweep.routing_key) == ("x.sweep", "x.sweep")


def test_polls_have_their_own_queue_and_a_beat_entry() -> None:
    """A long poll or backfill must never sit in front of a capture."""
    settings = load_settings({"CALLREC_QUEUE_PREFIX": "x", "CALLREC_POLL_INTERVAL_SECONDS": "60"})
    conf = make_celery(settings).conf
    assert poll_queue(settings) == "x.poll"
    assert conf.task_routes["callrec.poll"] == {"queue": "x.poll"}
    assert conf.task_routes["callrec.schedule_polls"] == {"queue": "x.poll"}
    assert {q.name for q in conf.task_queues} == {
        "x.capture",
        "x.capture.backfill",
        "x.sweep",
        "x.poll",
    }
    entry = conf.beat_schedule["schedule-polls"]
    assert entry["task"] == "callrec.schedule_polls" and entry["schedule"] == 12.0


def test_backfill_captures_have_their_own_queue() -> None:
    """A backfill's thousands of captures must never sit in front of a fresh recording."""
    settings = load_settings({"CALLREC_QUEUE_PREFIX": "x"})
    queues = {q.name: q for q in make_celery(settings).conf.task_queues}
    backfill = queues[backfill_queue(settings)]
    assert (backfill.exchange.name, backfill.routing_key) == ("x.capture.backfill",) * 2
    assert capture_queue_of(settings, "backfill") == "x.capture.backfill"
    assert capture_queue_of(settings, "fresh") == capture_queue(settings) == "x.capture"


def test_queue_suffixes_name_every_queue_callrec_declares() -> None:
    """Tests and benchmarks drop a stack's queues by ``QUEUE_SUFFIXES``: it must list them all."""
    settings = load_settings({"CALLREC_QUEUE_PREFIX": "q"})
    app = make_celery(settings)
    try:
        assert set(app.amqp.queues) == {f"q.{suffix}" for suffix in QUEUE_SUFFIXES}
    finally:
        app.close()


def test_broadcasts_are_per_prefix_and_broadcast_exchanges_names_them() -> None:
    """Control commands and events use the deployment's own exchanges (not Celery's shared
    ``celery.pidbox``/``celeryev``), and cleanup's list names exactly those."""
    app = make_celery(load_settings({"CALLREC_QUEUE_PREFIX": "q"}))
    try:
        mailbox = app.control.mailbox
        used = (mailbox.exchange.name, mailbox.reply_exchange.name, app.conf.event_exchange)
        assert used == broadcast_exchanges("q") == ("q.pidbox", "reply.q.pidbox", "q.events")
    finally:
        app.close()
