"""The Celery settings callrec's correctness leans on (reliability.md §3)."""

from __future__ import annotations

from config.settings import load_settings
from workers.celery_config import capture_queue, make_celery, poll_queue, sweep_queue


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
    assert {q.name for q in conf.task_queues} == {"x.capture", "x.sweep", "x.poll"}
    entry = conf.beat_schedule["schedule-polls"]
    assert entry["task"] == "callrec.schedule_polls" and entry["schedule"] == 12.0
