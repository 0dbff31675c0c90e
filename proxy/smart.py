"""Smart routing on the request path: whether the organization's policy (kept with the
caller, so this costs no query) applies to a request, and if so the classifier's
assessment and routing.policy's decision. Pure CPU, on hits too: the decision names
the cache generation and explains the answer whichever tier serves it.

`auto` with the policy off (or no policy) names no model: a 400 saying so, unless the
organization has a route called `auto` of its own. In shadow mode `auto` is sent to the
complex tier, the model an organization would pay for without routing, so shadow
changes nothing but the record and the header.
"""

from proxy.parse import Refusal, Request
from routing.complexity import assess
from routing.policy import Decision, decide
from routing.table import AUTO, RoutingTable

# The endpoints the classifier reads (embeddings have no task to grade).
_ROUTABLE = frozenset({"chat/completions", "completions", "responses", "messages"})

ROUTING_OFF = Refusal(
    400, f"The model '{AUTO}' asks the gateway to choose by task complexity, and smart "
    "routing is off for this organization: set a routing policy in mode 'shadow' or 'on' "
    "(dashboard, /api/routing/policy or manage.py set_routing_policy), or ask for a model",
    "routing_off", "model")
NOT_ROUTABLE = Refusal(
    400, f"The model '{AUTO}' is for chat, completions, responses and messages; "
    "ask for a model here", "model_not_routable", "model")


def routing_decision(routing: RoutingTable, request: Request) -> Decision | Refusal | None:
    """The decision for this request; None when the policy does not apply (then the
    request goes as asked); a Refusal for `auto` where nothing can choose."""
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
    return decide(policy=policy, assessment=assess(endpoint=request.endpoint,
                                                   body=request.body), asked=model)


def routed_namespace(namespace: str, decision: Decision, generation: int) -> str:
    """The cache namespace of a request the policy may change the model of (mode on, or
    `auto`): the client's plus the policy's generation, after a newline (which a
    client's namespace cannot hold), so a policy change starts new entries."""
    if decision.applied or decision.asked == AUTO:
        return f"{namespace}\nrouting:{generation}"
    return namespace
