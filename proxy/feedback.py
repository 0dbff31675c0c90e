"""POST /v1/feedback: what the caller thought of one of its answers, stored against
the request in the caller's organization (analytics.services.feedback_set).

Body: `request_id` (the X-Request-Id of the answer), and `score` (a number in [0, 1])
or `rating` ("up" or "down"), and optionally a `note` of up to 2,000 characters. Sent
again for the same request, it replaces the first. A request id of another
organization is answered exactly like an unknown one (404).
"""

import asyncio
import math
import re
import time

import orjson
from django.conf import settings

from analytics.services import RequestNotFound, feedback_set
from cognitude.db import run_in_db_thread
from organizations.services import AuthFailure
from proxy.auth import authenticate
from proxy.http import BodyTooLarge, read_body, respond, respond_error
from proxy.parse import api_key_from, declared_too_large, request_headers

MAX_NOTE = 2000
_MAX_BODY = 16 * 1024
_RATINGS = {"up": 1.0, "down": 0.0}
# The gateway's request ids are 32 hex digits; this is looser, but never holds what the
# database cannot (a NUL) or a header could not.
_REQUEST_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def _valid(body: object) -> tuple[str, float, str, str] | tuple[str, str]:
    """(request_id, score, rating, note), or (message, param) of the first problem."""
    if not isinstance(body, dict):
        return "The body must be a JSON object", ""
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        return "'request_id' is required: the X-Request-Id of the answer", "request_id"
    score, rating = body.get("score"), body.get("rating")
    if (score is None) == (rating is None):
        return "Give either 'score' (a number from 0 to 1) or 'rating' ('up' or 'down')", "score"
    if rating is not None:
        if not isinstance(rating, str) or rating not in _RATINGS:  # a list is unhashable
            return "'rating' must be 'up' or 'down'", "rating"
        score = _RATINGS[rating]
    elif (not isinstance(score, int | float) or isinstance(score, bool)
          or not math.isfinite(score) or not 0 <= score <= 1):
        return "'score' must be a number from 0 to 1", "score"
    note = body.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str):
        return "'note' must be a string", "note"
    if len(note) > MAX_NOTE:
        return f"'note' may be at most {MAX_NOTE} characters", "note"
    return request_id, float(score), rating or "", note


async def handle_feedback(scope, receive, send, headers: list) -> None:
    caller = await authenticate(api_key_from(request_headers(scope)))
    if isinstance(caller, AuthFailure):
        await respond_error(send, 401, "Invalid or missing API key", headers,
                            code="invalid_api_key")
        return
    try:
        # Refused on Content-Length alone too: a body declared over the limit may never
        # come, and reading would wait for it.
        if declared_too_large(request_headers(scope), _MAX_BODY) is not None:
            raise BodyTooLarge
        raw = await read_body(receive, _MAX_BODY)
    except BodyTooLarge:
        await respond_error(send, 413, f"The request body is over {_MAX_BODY} bytes",
                            headers, code="request_too_large")
        return
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        await respond_error(send, 400, "The request body is not valid JSON", headers,
                            code="invalid_json")
        return
    checked = _valid(body)
    if len(checked) == 2:
        message, param = checked
        await respond_error(send, 400, message, headers, code="invalid_request",
                            param=param or None)
        return
    request_id, score, rating, note = checked
    # Records land in batches (COGNITUDE_EVENT_FLUSH_SECONDS): feedback sent right after
    # its answer may come first, so an unknown id is looked for again for a little while.
    # Another organization's id waits the same and gets the same 404 as an unknown one.
    deadline = time.monotonic() + settings.COGNITUDE_FEEDBACK_WAIT_SECONDS
    pause = 0.05
    while True:
        try:
            feedback, created = await run_in_db_thread(
                feedback_set, org_id=caller.org_id, api_key_id=caller.key_id,
                request_id=request_id, score=score, rating=rating, note=note)
            break
        except RequestNotFound:
            if time.monotonic() + pause > deadline:
                await respond_error(send, 404, f"No request with id '{request_id}'",
                                    headers, code="request_not_found", param="request_id")
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.4)
    await respond(send, 201 if created else 200, orjson.dumps({
        "object": "feedback", "request_id": feedback.request_id, "score": feedback.score,
        "rating": feedback.rating or None, "note": feedback.note,
    }), headers)
