"""The Celery app. `celery -A cognitude worker` and `celery -A cognitude beat` start with
the environment variables alone (the same ones as the web processes)."""

import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_success

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")

app = Celery("cognitude")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "request-log-retention": {
        "task": "analytics.tasks.request_logs_prune",
        "schedule": crontab(hour=3, minute=17),  # daily, off the hour's peak
    },
}

# The pipeline's tasks return how many events they stored; counted here, in the process
# that ran them (the worker, or the web process under the embedded defaults).
_PIPELINE_TASKS = frozenset({"analytics.tasks.request_logs_store",
                             "caching.tasks.cache_entries_store"})


@task_success.connect
def _count_events_written(sender, result, **kwargs) -> None:
    if sender.name in _PIPELINE_TASKS and isinstance(result, int):
        from analytics import metrics  # needs Django's settings, loaded by now

        metrics.events_written(sender.name, result)
