"""The pipeline's own records in the database."""

import uuid

from pipeline.models import DatabaseIdentity


def database_identity_get() -> str:
    """The random id that names this database, made the first time it is asked for.

    Made here rather than by a migration alone so that a table emptied by hand (or by
    a test run's flush) gets one again instead of leaving the spool unable to replay."""
    identity, _ = DatabaseIdentity.objects.get_or_create(
        pk=1, defaults={"value": uuid.uuid4().hex})
    return identity.value
