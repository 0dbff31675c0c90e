"""Settings refuse a configuration that would lose data, at start, naming it."""

import os
import subprocess
import sys

from tests.live import PROJECT_DIR


def start(**env: str) -> subprocess.CompletedProcess:
    """Load the settings in a fresh process with exactly these services configured."""
    unset = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    return subprocess.run(
        [sys.executable, "-c", "import cognitude.settings"], cwd=PROJECT_DIR,
        env={**{k: v for k, v in os.environ.items() if k not in unset}, **env},
        capture_output=True, text=True, timeout=30,
    )


def test_it_refuses_a_broker_on_the_hot_tier_redis_server():
    # Another database number is still the same server, and its LRU policy is the
    # server's: the broker's queued events would be evicted with the cache.
    for broker in ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1",
                   "redis://127.0.0.1/3"):
        done = start(REDIS_URL="redis://127.0.0.1:6379/0", CELERY_BROKER_URL=broker)
        assert done.returncode != 0, broker
        assert "ImproperlyConfigured: CELERY_BROKER_URL" in done.stderr, done.stderr


def test_it_takes_a_broker_redis_server_of_its_own():
    done = start(REDIS_URL="redis://127.0.0.1:6379/0",
                 CELERY_BROKER_URL="redis://127.0.0.1:6380/0")
    assert done.returncode == 0, done.stderr


def test_it_takes_an_empty_database_url_for_the_embedded_default(tmp_path):
    # `DATABASE_URL=` (set, empty) is what a compose file or a Makefile leaves behind;
    # like an empty REDIS_URL it means "not configured", not a crash.
    done = subprocess.run(
        [sys.executable, "-c",
         "import cognitude.settings as s; print(s.DATABASES['default']['ENGINE'])"],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=30,
        env={**os.environ, "DATABASE_URL": "", "COGNITUDE_VAR_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "django.db.backends.sqlite3"
