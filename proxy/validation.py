"""What a well-formed /v1 request body is. Anything else is a 400 before any upstream
call or cache write."""

from dataclasses import dataclass

# A body that tries to choose where the gateway sends the request (or with which
# credentials) is refused: the organization's provider settings decide that.
_FORBIDDEN_FIELDS = ("api_base", "base_url", "api_key", "api_version", "custom_llm_provider")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True, slots=True)
class Invalid:
    message: str
    param: str | None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _common(body: dict) -> Invalid | None:
    for name in _FORBIDDEN_FIELDS:
        if name in body:
            return Invalid(f"'{name}' cannot be set per request on this gateway", name)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return Invalid("'model' is required and must be a non-empty string", "model")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        return Invalid("'stream' must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return Invalid("'stream_options' must be an object", "stream_options")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if body.get(name) is not None and not _is_number(body[name]):
            return Invalid(f"'{name}' must be a number", name)
    for name in ("n", "max_tokens", "max_completion_tokens"):
        if body.get(name) is not None and not _is_positive_int(body[name]):
            return Invalid(f"'{name}' must be a positive integer", name)
    return None


def _chat(body: dict) -> Invalid | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Invalid("'messages' must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return Invalid(
                f"messages[{i}] must be an object with a role ({', '.join(sorted(_ROLES))})",
                f"messages[{i}]",
            )
    return None


def _completions(body: dict) -> Invalid | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
        return Invalid("'prompt' must be a string or a non-empty array", "prompt")
    return None


def _embeddings(body: dict) -> Invalid | None:
    value = body.get("input")
    if not isinstance(value, (str, list)) or not value:
        return Invalid("'input' must be a non-empty string or array", "input")
    if body.get("stream"):
        return Invalid("Embeddings cannot be streamed", "stream")
    return None


def _responses(body: dict) -> Invalid | None:
    value = body.get("input")
    if not isinstance(value, (str, list)) or not value:
        return Invalid("'input' must be a non-empty string or array", "input")
    if isinstance(value, list) and not all(isinstance(item, dict) for item in value):
        return Invalid("'input' items must be objects", "input")
    if body.get("max_output_tokens") is not None and not _is_positive_int(
            body["max_output_tokens"]):
        return Invalid("'max_output_tokens' must be a positive integer", "max_output_tokens")
    for name in ("previous_response_id", "instructions"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return Invalid(f"'{name}' must be a string", name)
    if body.get("background") is not None and not isinstance(body["background"], bool):
        return Invalid("'background' must be a boolean", "background")
    return None


_MESSAGES_ROLES = frozenset({"user", "assistant"})


def _messages(body: dict) -> Invalid | None:
    """Anthropic's Messages API: max_tokens is required, the system prompt is a field."""
    if not _is_positive_int(body.get("max_tokens")):
        return Invalid("'max_tokens' is required and must be a positive integer", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Invalid("'messages' must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _MESSAGES_ROLES:
            return Invalid(f"messages[{i}] must be an object with a role (assistant, user)",
                           f"messages[{i}]")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return Invalid("'system' must be a string or an array of text blocks", "system")
    return None


_CHECKS = {"chat/completions": _chat, "completions": _completions, "embeddings": _embeddings,
           "responses": _responses, "messages": _messages}


def validate(endpoint: str, body: object) -> Invalid | None:
    if not isinstance(body, dict):
        return Invalid("The request body must be a JSON object", None)
    return _common(body) or _CHECKS[endpoint](body)
