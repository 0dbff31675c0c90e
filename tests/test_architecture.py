"""The arrows between the apps run one way (design.md, "The house plan"), read from the
code's imports (every import statement, at any depth, parsed, not grepped)."""

import ast
from pathlib import Path

from django.apps import apps

from tests.live import PROJECT_DIR

# The Django apps that are this project's (not Django's or a library's).
OURS = sorted(config.name for config in apps.get_app_configs()
              if Path(config.path).is_relative_to(PROJECT_DIR))
# The composition root: it mounts the proxy's ASGI app at /v1/.
ENTRY_POINT = PROJECT_DIR / "cognitude" / "asgi.py"


def modules_in(directory: Path) -> list[Path]:
    """The project's Python modules under `directory` (not its virtualenvs' or data)."""
    return sorted(path for path in directory.rglob("*.py")
                  if not any(part.startswith(".") or part == "var"
                             for part in path.relative_to(PROJECT_DIR).parts))


def imported(path: Path) -> set[str]:
    """The top-level packages a module imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
    return names


def importers_of(packages: set[str], modules: list[Path]) -> list[str]:
    return [f"{path.relative_to(PROJECT_DIR)} imports {', '.join(sorted(found))}"
            for path in modules if (found := imported(path) & packages)]


def test_it_knows_the_apps_it_checks():
    assert {"analytics", "caching", "organizations", "pipeline", "proxy"} <= set(OURS)


def test_it_keeps_caching_free_of_analytics():
    assert importers_of({"analytics"}, modules_in(PROJECT_DIR / "caching")) == []


def test_it_keeps_the_pipeline_free_of_every_app():
    others = set(OURS) - {"pipeline"}
    assert importers_of(others, modules_in(PROJECT_DIR / "pipeline")) == []


def test_it_lets_nothing_but_the_entry_point_import_the_proxy():
    modules = [path for path in modules_in(PROJECT_DIR)
               if not path.is_relative_to(PROJECT_DIR / "proxy")
               and not path.is_relative_to(PROJECT_DIR / "tests") and path != ENTRY_POINT]
    assert importers_of({"proxy"}, modules) == []


def test_it_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from analytics.models import RequestLog\n")
    assert imported(module) == {"analytics"}


def test_it_keeps_the_limits_downstream_of_what_they_read():
    # ratelimit reads prices and records (analytics) and organizations; none of those,
    # nor the cache or the routes, may depend on it.
    lower = ("analytics", "caching", "organizations", "pipeline", "routing")
    modules = [path for name in lower for path in modules_in(PROJECT_DIR / name)]
    assert importers_of({"ratelimit"}, modules) == []


def test_it_lets_alerts_read_only_what_they_watch():
    # alerts read the records, limits, breakers and organizations, and hand events to
    # the pipeline. Nothing they read imports alerts: only settings/urls (cognitude) and
    # the dashboard, which shows every app's pages (and the benchmarks, not the app).
    allowed = {"alerts", "analytics", "ratelimit", "routing", "organizations", "pipeline",
               "cognitude"}
    modules = modules_in(PROJECT_DIR / "alerts")
    apps_here = {name for name in OURS if (PROJECT_DIR / name).is_dir()}
    assert importers_of(apps_here - allowed, modules) == []
    others = [path for path in modules_in(PROJECT_DIR)
              if not path.is_relative_to(PROJECT_DIR / "alerts")
              and not path.is_relative_to(PROJECT_DIR / "tests")
              and not path.is_relative_to(PROJECT_DIR / "cognitude")
              and not path.is_relative_to(PROJECT_DIR / "dashboard")
              and not path.is_relative_to(PROJECT_DIR / "bench")]
    assert importers_of({"alerts"}, others) == []
