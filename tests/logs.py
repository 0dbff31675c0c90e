"""Every log the suite's processes write goes to one directory per run, so that the end
of the run can check none of them holds a raw API key or a provider key (tests/conftest.py,
pytest_sessionfinish).

The directory is COGNITUDE_TEST_LOG_DIR, made by the first pytest process (the xdist
controller, before it starts its workers, which inherit the variable).
"""

import os
import re
import tempfile
import uuid
from pathlib import Path

# A raw Cognitude key (organizations/keys.py: cog_ and 38 characters) and the shapes of
# the fake provider keys the tests give (conftest's `sk-<slug>-<hex>`, and any `sk-...`).
LEAKS = re.compile(rb"cog_[0-9A-Za-z]{38}|sk-[A-Za-z0-9_-]{8,}")


def log_dir() -> Path:
    path = os.environ.get("COGNITUDE_TEST_LOG_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="cognitude-test-logs-")
        os.environ["COGNITUDE_TEST_LOG_DIR"] = path
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def log_file(kind: str) -> Path:
    """A new file for one process's output (`kind`: gateway, worker, ...)."""
    return log_dir() / f"{kind}-{uuid.uuid4().hex[:10]}.log"


def leaked_lines(directory: Path | None = None) -> list[str]:
    """`file:line: text` for every line of the run's logs that holds a secret."""
    found = []
    for path in sorted((directory or log_dir()).glob("*.log")):
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if LEAKS.search(line):
                found.append(f"{path.name}:{number}: {line.decode(errors='replace')[:300]}")
    return found
