"""Smart routing on the request path: whether the organization's policy (kept with the
caller, so this costs no query) applies to a request, and if so the classifier's
assessment and routing.policy's decision. Pure CPU, on hits too: the decision explains
the answer whichever tier serves it.

The decision is a function of the body and the policy snapshot alone (its tiers'
capabilities included), so it is remembered per cache key for as long as the caller's
snapshot is the same object (COGNITUDE_API_KEY_CACHE_SECONDS): an identical request (a
cache hit, most of the time) gets it from memory instead of being assessed again.

`auto` with the policy off (or no policy) names no model: a 400 saying so, unless the
organization has a route called `auto` of its own. In shadow mode `auto` is sent to the
complex tier, the model an organization would pay for without routing, so shadow
changes nothing but the record and the header.
"""

from proxy.parse import Refusal, Request
from routing.complexity import assess
from routing.policy import Decision, decide
from routing.table import AUTO, PolicySnapshot, RoutingTable

# The endpoints the classifier reads (embeddings have no task to grade).
_ROUTABLE = frozenset({"chat/completions", "completions", "responses", "messages"})
_MAX_REMEMBERED = 10_000

ROUTING_OFF = Refusal(
    400, f"The model '{AUTO}' asks the gateway to choose by task complexity, and smart "
    "routing is off for this organization: set a routing policy in mode 'shadow' or 'on' "
    "(dashboard, /api/routing/policy or manage.py set_routing_policy), or ask for a model",
    "routing_off", "model")
NOT_ROUTABLE = Refusal(
    400, f"The model '{AUTO}' is for chat, completions, responses and messages; "
    "ask for a model here", "model_not_routable", "model")

_remembered: dict[tuple[int, str], tuple[PolicySnapshot, Decision]] = {}


def routing_policy_for(routing: RoutingTable, request: Request) -> PolicySnapshot | Refusal | None:
    """The policy that decides this request; None when none does (the request goes as
    asked); a Refusal for `auto` where nothing can choose."""
    model = request.model
    policy = routing.policy
    if policy is None or policy.mode == "off":
        if model == AUTO and AUTO not in routing.routes:
            return ROUTING_OFF
        return None
    if not policy.applies_to(model):
        return None
    if request.endpoint not in _ROUTABLE:
        return NOT_ROUTABLE if model == AUTO else None
    return policy


def routed_namespace(namespace: str, policy: PolicySnapshot, model: str) -> str:
    """The cache namespace of a request the policy may change the model of (mode on, or
    `auto`): the client's plus the policy's generation and what answers its tiers, after
    a newline (which a client's namespace cannot hold), so a policy change, or an edit
    of a tier's route or model, starts new entries."""
    if policy.mode == "on" or model == AUTO:
        return f"{namespace}\nrouting:{policy.generation}:{policy.answered_by}"
    return namespace


def routing_decision(*, org_id: int, policy: PolicySnapshot, request: Request,
                     key_hash: str) -> Decision:
    """The policy's decision for this request, remembered by its cache key (which holds
    the body, and the generation where the policy may change the model)."""
    memo = (org_id, key_hash)
    remembered = _remembered.get(memo)
    if remembered is not None and remembered[0] is policy:
        return remembered[1]
    decision = decide(policy=policy, assessment=assess(endpoint=request.endpoint,
                                                       body=request.body),
                      asked=request.model)
    if len(_remembered) >= _MAX_REMEMBERED:
        _remembered.clear()
    _remembered[memo] = (policy, decision)
    return decision
