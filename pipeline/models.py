from django.db import models
from django.utils import timezone


class DeadLetter(models.Model):
    """An event its task could not store (the database refused it, or it was
    malformed), set aside so that the rest of its batch was stored. `event` holds the
    event's bytes as it was serialised, to read or to replay by hand."""

    kind = models.CharField(max_length=40)
    event = models.BinaryField()
    # SHA-256 of `event`: a batch delivered twice (or retried) sets its event aside once.
    digest = models.CharField(max_length=64, unique=True)
    # The exception's class only: its message may quote the event, a tenant's content.
    error = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.error} {self.created_at:%Y-%m-%d %H:%M:%S}"


class DatabaseIdentity(models.Model):
    """One row: a random id that names this database, the one deployment whose events a
    spool may replay into it (see the spool)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.CharField(max_length=32)

    class Meta:
        verbose_name_plural = "database identity"

    def __str__(self) -> str:
        return self.value
