"""Management commands as an operator runs them: `python manage.py ...` in a process of
its own, on the test database."""

import os
import subprocess
import sys

from django.conf import settings

from tests import live


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python manage.py ARGS` against the test database, as an operator would run it."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=live.PROJECT_DIR,
        env={
            **os.environ,
            "DATABASE_URL": live.test_database_url(),
            "COGNITUDE_ENCRYPTION_KEYS": ",".join(settings.COGNITUDE_ENCRYPTION_KEYS),
            "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> None:
    """The command failed with a CommandError saying `words`, not a traceback."""
    assert result.returncode != 0
    assert result.stdout == ""
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
