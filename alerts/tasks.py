"""The alerts' tasks: thin, each loading what it needs and calling one service.

- `alerts.evaluate`: beat's tick, every minute (cognitude/celery.py).
- `alerts.tasks.budget_usage_evaluate`: consumes the budget-usage events the limits send from
  the request path (registered with the pipeline in AlertsConfig.ready), so a budget
  rule fires within seconds instead of at the next tick.
- `alerts.deliver`: one delivery attempt of one AlertEvent, retried by itself with backoff
  (alerts/delivery.py decides when, and when to give up).
- `alerts.deliver_due`: the sweep, on beat: events whose attempt is due and that no task
  holds (an enqueue lost with the broker, a worker that died mid-attempt).
"""

import threading

from celery import shared_task
from django.db import InterfaceError, OperationalError, connections

from alerts import delivery, services
from pipeline.storage import events_load
from ratelimit.events import BudgetUsageEvent


# A tick that starts after the next one is due is worth nothing: the next one will run.
@shared_task(name="alerts.evaluate", expires=55, ignore_result=True)
def evaluate() -> int:
    return len(services.alerts_tick().transitions)


# Named by its path, as the pipeline's registry names the tasks that store events.
@shared_task(autoretry_for=(OperationalError, InterfaceError), retry_backoff=True,
             retry_backoff_max=60, max_retries=5, ignore_result=True)
def budget_usage_evaluate(events: list[dict]) -> int:
    # The pipeline's tasks answer how many events they consumed (its metrics count them).
    loaded = events_load(BudgetUsageEvent, events)
    services.budget_usage_evaluate(events=loaded)
    return len(loaded)


# The longest retry a task schedules itself; a later one is left to the sweep (every
# minute), due then. A worker holds a countdown's message unacknowledged until it runs,
# and a Redis broker hands out a copy of every message held past its 30 s visibility
# timeout (cognitude/settings.py); the claim would make the copies harmless, but
# there is no need to make them.
COUNTDOWN_MAX_SECONDS = 25.0


# acks_late (the project's default) and the claim in alert_event_deliver make a
# redelivered message harmless: it finds the event delivered, or claimed, and stops.
@shared_task(name="alerts.deliver", bind=True, max_retries=None, ignore_result=True)
def deliver(self, event_id: int) -> str:
    outcome = delivery.alert_event_deliver(event_id=event_id)
    # Only the task that made the attempt schedules the next: a duplicate that found the
    # event claimed or not yet due leaves it to that one (and to the sweep).
    if outcome.attempted and outcome.retry_in is not None:
        if self.request.is_eager:
            _deliver_later(event_id, outcome.retry_in)
        elif outcome.retry_in <= COUNTDOWN_MAX_SECONDS:
            raise self.retry(countdown=outcome.retry_in)
    return outcome.status


def _deliver_later(event_id: int, seconds: float) -> None:
    """Without a broker (the embedded defaults) a retry is a timer in this process, so
    that the thread that enqueued the delivery (a request's, the pipeline's) never
    waits out a receiver's backoff."""
    def run() -> None:
        try:
            deliver.apply(args=[event_id])
        finally:
            connections.close_all()  # this thread's own database connection

    timer = threading.Timer(seconds, run)
    timer.daemon = True
    timer.start()


@shared_task(name="alerts.deliver_due", expires=55, ignore_result=True)
def deliver_due() -> int:
    due = delivery.alert_events_due()
    for event_id in due:
        deliver.delay(event_id)
    return len(due)
