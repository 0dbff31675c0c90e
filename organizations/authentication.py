"""DRF authentication by an organization's API key, for the management and analytics APIs.

The key decides the organization: `request.auth` is the `ApiKey`, `request.user` stays
anonymous. Without a key header DRF goes on to the session (organization members).
"""

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from organizations.keys import key_from_headers
from organizations.models import ApiKey
from organizations.services import api_key_authenticate


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[AnonymousUser, ApiKey] | None:
        raw_key = key_from_headers(request.headers.get("Authorization"),
                                   request.headers.get("X-API-Key"))
        if raw_key is None:
            return None  # no key offered: let the session speak
        result = api_key_authenticate(raw_key=raw_key)
        if result.api_key is None:
            # Same answer for every failure, as on /v1: no hint which part was wrong.
            raise AuthenticationFailed("Invalid or missing API key", code="invalid_api_key")
        return AnonymousUser(), result.api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to an anonymous request.
        return 'Bearer realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "organizations.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "An organization API key (cog_...), also accepted as "
                               "X-API-Key. Managing (providers, routes, keys) needs an "
                               "admin-scoped key."}
