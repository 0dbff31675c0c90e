"""Clients of the management API as its users hold them: a member's session, an API
key of either scope; and the check of an OpenAI-shaped error."""

from django.test import Client

from organizations.models import Organization
from organizations.services import api_key_create


def session_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def key_client(raw_key: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {raw_key}"})


def admin_key_client(organization: Organization) -> Client:
    return key_client(api_key_create(organization=organization, scope="admin").raw_key)


def assert_error(response, status: int, *words: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error
    if param is not None:
        assert error["param"] == param, error
    return error
