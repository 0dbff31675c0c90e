"""Running Django's migration executor on the test database, for data-migration tests."""

from collections.abc import Iterator

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(targets):
    """Migrate the test database to `targets`; returns the apps of that state."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def at_migrations(targets) -> Iterator:
    """For a fixture: the apps at `targets`, and the latest state put back afterwards
    whatever the test does."""
    apps = migrate(targets)
    yield apps
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
