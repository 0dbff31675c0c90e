from django.apps import AppConfig


class FakeupstreamConfig(AppConfig):
    """A Django app only to provide `manage.py fakeupstream`; it has no models."""

    name = "fakeupstream"
