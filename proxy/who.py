"""Who is calling a /v1 endpoint: the one way every endpoint turns a request into its
caller, with the limit on failed authentications per client address in front."""

from organizations.services import AuthFailure
from proxy.auth import Caller, authenticate
from proxy.http import respond, respond_error
from proxy.parse import api_key_from, request_headers
from ratelimit.gate import address_failed, address_refusal, client_address


async def caller_for(scope, send, headers: list) -> Caller | None:
    """The request's caller, or None once the request has been answered: 429 for an
    address that keeps sending bad keys (refused from memory, before any lookup), 401
    for a bad key (which costs its address one Redis call)."""
    address = client_address(scope)
    refused = address_refusal(address)
    if refused is not None:
        await respond(send, refused.status, refused.body, [*headers, *refused.headers])
        return None
    caller = await authenticate(api_key_from(request_headers(scope)))
    if isinstance(caller, AuthFailure):
        await address_failed(address)
        await respond_error(send, 401, "Invalid or missing API key", headers,
                            code="invalid_api_key")
        return None
    return caller
