"""The one place that shapes errors the way OpenAI does, for /v1 and the JSON endpoints."""

import orjson

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "server_error",
    504: "upstream_timeout",
}


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None,
    type: str | None = None,
) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` as bytes. `type` is the status's
    unless given (OpenAI's 429s say "requests", "tokens" or "insufficient_quota")."""
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": type or _TYPES.get(
                    status, "server_error" if status >= 500 else "invalid_request_error"
                ),
                "param": param,
                "code": code,
            }
        }
    )
