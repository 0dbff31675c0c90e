"""The Celery app. `celery -A cognitude worker` and `celery -A cognitude beat` start with
the environment variables alone (the same ones as the web processes)."""

import os

import orjson
from celery import Celery
from celery.schedules import crontab
from kombu.serialization import register
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")

# Event batches are most of what goes through the broker; the standard library's json
# cost the web process 3 µs an event to encode, orjson 0.2 µs.
register("orjson", orjson.dumps, orjson.loads, content_type="application/x-orjson",
         content_encoding="binary")



class _RedisChannel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:
            raise kombu_redis.get_redis_ConnectionError()("the broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport, for which a channel of a connection already let go is
    a lost connection, as it is.

    When the broker drops, Celery 5.7 collects the connection and then closes it; kombu
    5.7's Redis channel, asked on that close (or by a task finishing meanwhile) to
    acknowledge or restore messages, reaches for the transport's client, which the
    collect set to None: AttributeError, which Celery takes for an unrecoverable error,
    and the worker exits. A connection error instead is what both know how to handle:
    the acknowledgement is logged as lost, the consumer reconnects, and Redis keeps
    the unacknowledged message until the visibility timeout hands it out again."""

    Channel = _RedisChannel


app = Celery("cognitude")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "request-log-retention": {
        "task": "analytics.tasks.request_logs_prune",
        "schedule": crontab(hour=3, minute=17),  # daily, off the hour's peak
    },
    "alerts-evaluate": {
        "task": "alerts.evaluate",
        "schedule": 60.0,  # the minute tick; safe to overlap (alerts.evaluation)
    },
    "alerts-deliver-due": {
        "task": "alerts.deliver_due",
        # Alert events whose delivery is due and that no worker holds (a lost enqueue, a
        # worker that died mid-attempt); a duplicate finds the event claimed or delivered.
        "schedule": 60.0,
    },
}
