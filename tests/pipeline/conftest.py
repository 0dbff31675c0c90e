import pytest

from tests.workers import start_worker, vhost_create


@pytest.fixture
def vhost():
    created = vhost_create()
    yield created
    created.delete()


@pytest.fixture
def worker(vhost):
    started = start_worker(vhost.url)
    yield started
    started.kill()  # a warm shutdown takes seconds; the vhost and its queue go anyway
