"""The decision (routing.policy.decide): the classifier's tier, then guards that only
ever lift it, and the header that explains it."""

import pytest

from routing.complexity import Assessment
from routing.policy import decide
from routing.table import PolicySnapshot, TierModel

MINI = TierModel("gpt-4o-mini", "gpt-4o-mini", context_window=128_000, tools=True,
                 json_schema=True, images=True, price=0.75)
TEXT_ONLY = TierModel("gpt-3.5-turbo", "gpt-3.5-turbo", context_window=16_385, tools=True,
                      price=2.0)
BIG = TierModel("gpt-4o", "gpt-4o", context_window=128_000, tools=True, json_schema=True,
                images=True, price=12.5)


def policy(*tiers: TierModel, mode: str = "on", apply_to=(), prices=None) -> PolicySnapshot:
    # gpt-4-turbo's list price, input plus output per million: 40.
    return PolicySnapshot(mode=mode, tiers=tiers or (TEXT_ONLY, MINI, BIG),
                          simple_below=0.25, complex_from=0.5,
                          apply_to=frozenset(apply_to), generation=3,
                          apply_to_prices=prices or dict.fromkeys(apply_to, 40.0))


def assessment(score: float, *, tokens: int = 100, **facts) -> Assessment:
    values = {"tools_required": False, "strict_schema": False, "has_images": False, **facts}
    return Assessment(score=score, tokens_in=tokens, tokens_out=50, signals=(), **values)


@pytest.mark.parametrize(("score", "tier", "model"), [
    (0.0, "simple", "gpt-3.5-turbo"), (0.249, "simple", "gpt-3.5-turbo"),
    (0.25, "standard", "gpt-4o-mini"), (0.49, "standard", "gpt-4o-mini"),
    (0.5, "complex", "gpt-4o"), (1.0, "complex", "gpt-4o"),
])
def test_it_picks_the_tier_of_the_score(score, tier, model):
    decision = decide(policy=policy(), assessment=assessment(score), asked="auto")

    assert (decision.tier, decision.model, decision.send, decision.guard) == (
        tier, model, model, "")
    assert decision.baseline == "gpt-4o"  # auto is priced against the complex tier


def test_it_explains_itself_in_one_header():
    decision = decide(policy=policy(), assessment=assessment(0.18), asked="auto")

    assert decision.header() == "tier=simple; score=0.18; model=gpt-3.5-turbo; asked=auto"


def test_it_keeps_required_tools_at_the_top():
    decision = decide(policy=policy(), assessment=assessment(0.1, tools_required=True),
                      asked="auto")

    assert (decision.tier, decision.model, decision.guard) == ("complex", "gpt-4o", "tools")
    assert decision.header().endswith("; guard=tools")


def test_it_skips_a_tier_without_strict_schemas_but_takes_the_next_that_has_them():
    decision = decide(policy=policy(), assessment=assessment(0.1, strict_schema=True),
                      asked="auto")

    assert (decision.tier, decision.model, decision.guard) == ("standard", "gpt-4o-mini",
                                                               "schema")


def test_it_never_sends_images_to_a_text_only_model():
    text = TierModel("text", "text", images=False, json_schema=True)
    decision = decide(policy=policy(text, text, BIG), assessment=assessment(0.1,
                      has_images=True), asked="auto")

    assert (decision.tier, decision.model, decision.guard) == ("complex", "gpt-4o", "images")


def test_it_lifts_a_context_longer_than_the_cheaper_window():
    decision = decide(policy=policy(), assessment=assessment(0.1, tokens=20_000),
                      asked="auto")

    assert (decision.tier, decision.model, decision.guard) == ("standard", "gpt-4o-mini",
                                                               "context")


def test_it_takes_an_unknown_window_for_no_limit_and_unknown_capabilities_for_none():
    unknown = TierModel("mystery", "mystery")
    long = decide(policy=policy(unknown, MINI, BIG), assessment=assessment(0.1,
                  tokens=500_000), asked="auto")
    schema = decide(policy=policy(unknown, MINI, BIG), assessment=assessment(0.1,
                    strict_schema=True), asked="auto")

    assert long.model == "mystery"
    assert schema.model == "gpt-4o-mini"


def test_it_sends_a_listed_model_down_but_keeps_it_when_complex():
    listed = policy(apply_to=["gpt-4-turbo"])
    down = decide(policy=listed, assessment=assessment(0.1), asked="gpt-4-turbo")
    kept = decide(policy=listed, assessment=assessment(0.9), asked="gpt-4-turbo")
    guarded = decide(policy=listed, assessment=assessment(0.1, tools_required=True),
                     asked="gpt-4-turbo")

    assert (down.model, down.send, down.baseline) == ("gpt-3.5-turbo", "gpt-3.5-turbo",
                                                      "gpt-4-turbo")
    assert (kept.tier, kept.model, kept.send) == ("complex", "gpt-4-turbo", "gpt-4-turbo")
    assert (guarded.model, guarded.guard) == ("gpt-4-turbo", "tools")


def test_it_only_records_in_shadow_mode():
    shadow = policy(mode="shadow", apply_to=["gpt-4-turbo"])
    auto = decide(policy=shadow, assessment=assessment(0.1), asked="auto")
    listed = decide(policy=shadow, assessment=assessment(0.1), asked="gpt-4-turbo")

    # auto names no model: in shadow it goes where it would without routing, the top.
    assert (auto.model, auto.send, auto.applied) == ("gpt-3.5-turbo", "gpt-4o", False)
    assert (listed.model, listed.send) == ("gpt-3.5-turbo", "gpt-4-turbo")
    assert auto.header() == ("tier=simple; score=0.10; model=gpt-3.5-turbo; asked=auto; "
                             "mode=shadow")


def test_it_never_sends_a_listed_model_up_to_a_pricier_or_unpriced_tier():
    # gpt-4o-mini listed: the simple tier (gpt-3.5-turbo, 2.0) costs more than it (0.75).
    listed = policy(apply_to=["gpt-4o-mini"], prices={"gpt-4o-mini": 0.75})
    unpriced = policy(apply_to=["house-model"], prices={"house-model": None})

    up = decide(policy=listed, assessment=assessment(0.1), asked="gpt-4o-mini")
    unknown = decide(policy=unpriced, assessment=assessment(0.1), asked="house-model")

    assert (up.tier, up.model, up.guard) == ("complex", "gpt-4o-mini", "price")
    assert (unknown.model, unknown.guard) == ("house-model", "price")
