"""Celery beat's schedule (cognitude/celery.py), run by the web process itself when there
is no broker (the embedded defaults, `make run`).

There every task runs inline and no beat process runs, so nothing else would evaluate
the alert rules each minute, resend stranded alert deliveries or prune old request
records. With a broker, `celery -A cognitude beat` runs them and this is not started.
Each due task runs in a database thread, off the event loop; like beat's, the first run
of an entry comes one interval after the start (a daily one at its hour)."""

import asyncio
import logging

from celery.schedules import maybe_schedule

from cognitude.celery import app
from cognitude.db import run_in_db_thread

logger = logging.getLogger("cognitude.beat")

POLL_SECONDS = 1.0


def _run(task_name: str) -> None:
    app.tasks[task_name].apply(throw=True)


async def run_schedule() -> None:
    """Run each entry of the beat schedule when it is due, until cancelled."""
    # What a worker does at its start: the apps' tasks modules, which the web process
    # does not import otherwise (alerts.tasks), so that their tasks are registered.
    app.loader.import_default_modules()
    entries = {name: (entry["task"], maybe_schedule(entry["schedule"], app=app))
               for name, entry in app.conf.beat_schedule.items()}
    last_run = dict.fromkeys(entries, app.now())
    while True:
        await asyncio.sleep(POLL_SECONDS)
        for name, (task_name, schedule) in entries.items():
            if not schedule.is_due(last_run[name]).is_due:
                continue
            last_run[name] = app.now()
            try:
                await run_in_db_thread(_run, task_name)
            except Exception:  # logged; the next run comes at its time all the same
                logger.exception("scheduled task %s failed", task_name)
