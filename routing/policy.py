"""Smart routing's decision for one request: a pure function of the organization's
policy snapshot (routing.table.PolicySnapshot, with its tiers' capabilities from the
model table) and the classifier's assessment (routing.complexity). No I/O: the request
path calls it on every request the policy applies to, cache hits included.

The classifier's score gives a tier; the guards then lift it, never lower it: a request
never goes down to a model that cannot do what it asks. Required tools keep it at the
top; a strict JSON schema, images or a context longer than a model's window skip each
tier whose model cannot take them. "The top" is what the client asked for: for `auto`
the complex tier, for a model in the policy's apply-to list that model itself, which
only goes to a tier whose model the model table prices lower ("price" when none is).
"""

from dataclasses import dataclass

from routing.complexity import Assessment, tier_for
from routing.table import AUTO, TIERS, PolicySnapshot, TierModel

_TOP = len(TIERS) - 1


@dataclass(frozen=True, slots=True)
class Decision:
    asked: str  # the model the client asked for
    mode: str  # "on" (applied) or "shadow" (recorded only)
    tier: str  # the tier chosen, guards applied
    score: float
    model: str  # the model the router chose (a model, or a route's name)
    # Why the classifier's tier was lifted ("tools", "schema", "images", "context"), or "".
    guard: str
    # The model the request is sent as: `model` when applied; in shadow mode what was
    # asked (for `auto`, which names no model, the complex tier).
    send: str
    # The models the costs are priced on: the chosen one, and the one asked for (for
    # `auto` the complex tier's), whose difference is the saving.
    priced_as: str
    baseline: str

    @property
    def applied(self) -> bool:
        return self.mode == "on"

    def header(self) -> str:
        """The X-Cognitude-Route value that explains the decision."""
        value = (f"tier={self.tier}; score={self.score:.2f}; model={self.model}; "
                 f"asked={self.asked}")
        if self.guard:
            value += f"; guard={self.guard}"
        if not self.applied:
            value += f"; mode={self.mode}"
        return value


def _refusal(tier: TierModel, assessment: Assessment) -> str:
    """The first guard `tier`'s model fails for this request, or ""."""
    if assessment.strict_schema and not tier.json_schema:
        return "schema"
    if assessment.has_images and not tier.images:
        return "images"
    window = tier.context_window
    if window is not None and assessment.tokens_in + assessment.tokens_out > window:
        return "context"
    return ""


def decide(*, policy: PolicySnapshot, assessment: Assessment, asked: str) -> Decision:
    """The tier and model for a request for `asked` (`auto` or a model the policy
    applies to), with policy.mode "on" or "shadow"."""
    score = assessment.score
    index = TIERS.index(tier_for(score=score, simple_below=policy.simple_below,
                                 complex_from=policy.complex_from))
    auto = asked == AUTO
    complex_tier = policy.tiers[_TOP]
    top = complex_tier if auto else TierModel(name=asked, priced_as=asked)
    guard = "tools" if assessment.tools_required and index < _TOP else ""
    chosen = top
    ceiling = None if auto else policy.apply_to_prices.get(asked)
    if not guard:
        while index < _TOP:
            tier = policy.tiers[index]
            refused = _refusal(tier, assessment)
            if not auto and not refused and (
                    ceiling is None or tier.price is None or tier.price >= ceiling):
                refused = "price"  # never up: only a tier known to be cheaper
            if not refused:
                chosen = policy.tiers[index]
                break
            guard = guard or refused
            index += 1
    if chosen is top:
        index = _TOP
    mode = policy.mode
    if mode == "on":
        send = chosen.name
    else:
        send = complex_tier.name if auto else asked
    return Decision(asked=asked, mode=mode, tier=TIERS[index], score=score,
                    model=chosen.name, guard=guard, send=send, priced_as=chosen.priced_as,
                    baseline=top.priced_as)
