"""The base of the JSON APIs under /api (DRF): who asks, about which organization, may
they, and errors in OpenAI's shape.

Who may ask: an organization's API key (the key decides the organization), or a
logged-in member (the organization is `?org=<slug>`, optional for a member of only
one). Any other organization is a 404, so nobody learns which slugs exist. Reading
analytics takes any key; managing (ManagementApi) takes an admin-scoped key or a
member, and writing takes an owner or admin.
"""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from cognitude.db import database_unreachable
from cognitude.error_views import database_unavailable
from cognitude.errors import error_body
from organizations.authentication import ApiKeyAuthentication
from organizations.errors import (
    ApiKeyNotFound,
    OrganizationNotChosen,
    OrganizationNotFound,
    ProviderInUse,
    ProviderNotFound,
)
from organizations.models import ApiKey, Organization
from organizations.selectors import member_can_manage, organization_for_member

ORG_PARAMETER = OpenApiParameter(
    "org", str, description="Organization slug, for a logged-in member of several "
    "organizations. With an API key it may only name the key's own organization.",
)


def _json_error(status: int, message: str, *, code: str | None = None,
                param: str | None = None) -> HttpResponse:
    return HttpResponse(error_body(status, message, code=code, param=param), status=status,
                        content_type="application/json")


def _validation_message(detail, path: str = "") -> tuple[str, str | None] | None:
    """The first problem in a serializer's errors as (message, param), param naming the
    field like `targets[1].weight`; None when `detail` holds no problem (the valid
    items of a list of objects come as empty dicts)."""
    if isinstance(detail, dict):
        for field, errors in detail.items():
            if field == "non_field_errors":
                inner = path
            elif isinstance(field, int):  # a ListField's item
                inner = f"{path}[{field}]"
            else:
                inner = f"{path}.{field}" if path else field
            found = _validation_message(errors, inner)
            if found is not None:
                return found
        return None
    if isinstance(detail, list):
        for index, item in enumerate(detail):
            # A list of messages is about `path`; a list of objects is indexed.
            inner = f"{path}[{index}]" if isinstance(item, dict | list) else path
            found = _validation_message(item, inner)
            if found is not None:
                return found
        return None
    return (f"{path}: {detail}" if path else str(detail)), path or None


def api_exception_handler(exc: Exception, context: dict) -> HttpResponse | None:
    """DRF's and the services' errors in OpenAI's shape; anything else is left to
    Django (a 500). The view's `domain_errors` say what its domain errors answer."""
    view = context.get("view")
    for kind, (status, code) in getattr(view, "domain_errors", {}).items():
        if isinstance(exc, kind):
            return _json_error(status, str(exc), code=code)
    if isinstance(exc, DjangoValidationError):
        return _json_error(400, "; ".join(exc.messages), code="invalid_request")
    if isinstance(exc, exceptions.ValidationError):
        message, param = _validation_message(exc.detail) or ("Invalid request", None)
        return _json_error(400, message, code="invalid_parameter", param=param)
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response = _json_error(exc.status_code, str(exc.detail),
                               code=codes if isinstance(codes, str) else None)
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        return response
    if database_unreachable(exc):
        return database_unavailable()
    return None


class IsMemberOrApiKey(BasePermission):
    def has_permission(self, request: Request, view) -> bool:
        return isinstance(request.auth, ApiKey) or bool(
            request.user and request.user.is_authenticated
        )


def organization_for_request(request: Request) -> Organization:
    """The organization this request is about: the key's, or one of the user's (with
    the user's role as `member_role`)."""
    slug = request.query_params.get("org") or None
    if isinstance(request.auth, ApiKey):
        organization = request.auth.organization
        if slug is not None and slug != organization.slug:
            raise OrganizationNotFound("No such organization")
        return organization
    try:
        return organization_for_member(user=request.user, slug=slug)
    except OrganizationNotChosen:
        raise exceptions.ValidationError(
            {"org": ["required: you are a member of several organizations"]}
        ) from None


class RequestBodyTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "request_too_large"


class JsonBodyParser(JSONParser):
    """JSON bodies only (a form or multipart body is a 415, not an empty form whose
    booleans read as false), at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes (DRF reads the
    stream itself, past Django's check), and nesting too deep for Python's parser is
    a 400, not a RecursionError."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length and length.isdigit() and int(length) > limit:
            raise RequestBodyTooLarge(f"The request body is over {limit} bytes")
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


class OrganizationApi(APIView):
    """Authentication, the organization, and OpenAI-style errors for the views below."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsMemberOrApiKey]
    renderer_classes = [JSONRenderer]
    parser_classes = [JsonBodyParser]
    domain_errors: dict[type[Exception], tuple[int, str]] = {
        OrganizationNotFound: (404, "not_found"),
    }
    organization: Organization

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        self.organization = organization_for_request(request)

    def get_exception_handler(self):
        return api_exception_handler


class ManagementApi(OrganizationApi):
    """Managing the organization: an admin-scoped key (a proxy-scoped one is a 403), or
    a member, who may read; writing takes an owner or admin."""

    domain_errors = {
        **OrganizationApi.domain_errors,
        ProviderNotFound: (404, "not_found"),
        ApiKeyNotFound: (404, "not_found"),
        ProviderInUse: (409, "provider_in_use"),
    }

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if isinstance(request.auth, ApiKey):
            if request.auth.scope != ApiKey.Scope.ADMIN:
                raise exceptions.PermissionDenied(
                    "This API key has the proxy scope: managing the organization takes "
                    "an admin-scoped key", code="insufficient_scope")
        elif request.method not in SAFE_METHODS and not member_can_manage(
                organization=self.organization):
            raise exceptions.PermissionDenied("Only an owner or admin of the organization "
                                              "can change this", code="forbidden")


def choices_message(choices) -> str:
    """A ChoiceField's invalid_choice message that lists the choices."""
    return "must be one of " + ", ".join(str(c) for c in choices) + " (got {input!r})"


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": "string", "nullable": True},
                       "code": {"type": "string", "nullable": True}},
    }},
}


def error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: any operation may answer an error (bad
    input, no key, another organization's object, a method it does not take), always
    in the one error shape, so that is every operation's `default` response."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    default = {"description": "An error, in OpenAI's shape",
               "content": {"application/json": {
                   "schema": {"$ref": "#/components/schemas/Error"}}}}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].setdefault("default", default)
    return result
