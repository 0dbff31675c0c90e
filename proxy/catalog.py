"""What GET /v1/models and /v1/models/{model} answer: the organization's route names
beside the models its providers list, in OpenAI's shape."""

import asyncio
import re
from dataclasses import dataclass

import orjson

from proxy.auth import NO_PROVIDER, Caller, UpstreamProblem
from proxy.providers import UpstreamError, UpstreamResponse, provider_for
from routing.table import ProviderConfig

# What a model id is made of (OpenAI's, fine-tunes' "ft:...", hubs' "org/name"): a
# model passed to the provider's URL can never hold an escape or a dot segment.
_MODEL_ID = re.compile(r"[A-Za-z0-9_:@+-][A-Za-z0-9._:@+-]*(/[A-Za-z0-9_:@+-][A-Za-z0-9._:@+-]*)*")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: bytes = b"application/json"


def _route_model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "cognitude"}


async def _listed(provider: ProviderConfig) -> UpstreamResponse | UpstreamError:
    try:
        return await provider_for(provider).send("models", None)
    except UpstreamError as exc:
        return exc


def _models_of(answer: UpstreamResponse, provider: ProviderConfig) -> list[dict] | None:
    """The model objects of a provider's listing, in OpenAI's shape; None if unusable."""
    if answer.status != 200:
        return None
    try:
        data = orjson.loads(answer.body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return [{**item, "object": item.get("object", "model"), "created": item.get("created", 0),
             "owned_by": item.get("owned_by", provider.name)}
            for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]


async def models_list(*, caller: Caller) -> Answer | UpstreamProblem | UpstreamError:
    """Route names first, then each provider's models (the default provider's first)
    not already named; a provider that fails is left out, unless nothing is left."""
    if caller.problem is not None:
        return caller.problem
    table = caller.routing
    providers = sorted(table.providers.values(),
                       key=lambda p: (table.default is None or p.id != table.default.id, p.name))
    if not table.routes and not providers:
        return NO_PROVIDER
    data = [_route_model(name) for name in sorted(table.routes)]
    seen = set(table.routes)
    answers = await asyncio.gather(*(_listed(provider) for provider in providers))
    first_failure: UpstreamResponse | UpstreamError | None = None
    for provider, answer in zip(providers, answers, strict=True):
        models = None if isinstance(answer, UpstreamError) else _models_of(answer, provider)
        if models is None:
            first_failure = first_failure or answer
            continue
        for model in models:
            if model["id"] not in seen:
                seen.add(model["id"])
                data.append(model)
    if not data and first_failure is not None:
        if isinstance(first_failure, UpstreamError):
            return first_failure
        return Answer(first_failure.status, first_failure.body,
                      first_failure.content_type.encode())
    return Answer(200, orjson.dumps({"object": "list", "data": data}))


async def model_retrieve(*, caller: Caller, model: str) -> Answer | UpstreamProblem | UpstreamError:
    """A route of the organization, or the default provider's answer for the model."""
    if caller.problem is not None:
        return caller.problem
    table = caller.routing
    if model in table.routes:
        return Answer(200, orjson.dumps(_route_model(model)))
    if table.default is None:
        return NO_PROVIDER
    if not _MODEL_ID.fullmatch(model):
        return UpstreamProblem(404, f"The model '{model}' does not exist", "model_not_found")
    try:
        answer = await provider_for(table.default).send(f"models/{model}", None)
    except UpstreamError as exc:
        return exc
    return Answer(answer.status, answer.body, answer.content_type.encode())
