"""The complexity classifier: what a routed request's tier, score and guard facts are.

Pure functions, no database: bodies as the four API shapes send them."""

import math

import pytest

from routing.complexity import (
    COMPLEX_FROM,
    SIMPLE_BELOW,
    Tier,
    assess,
    thresholds_for_share,
    tier_for,
)


def chat(text, **fields):
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **fields}


def tier(endpoint, body):
    return tier_for(score=assess(endpoint=endpoint, body=body).score)


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def test_it_routes_a_greeting_to_the_simple_tier():
    assert tier("chat/completions", chat("hi there!")) is Tier.SIMPLE
    assert tier("messages", {"max_tokens": 100, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "thanks, bye"}]}]}) is Tier.SIMPLE


def test_it_routes_a_proof_request_to_the_complex_tier():
    assert tier("chat/completions", chat("Prove that there are infinitely many primes.")) \
        is Tier.COMPLEX
    assert tier("responses", {"input": "Démontrez que racine de 2 est irrationnel."}) \
        is Tier.COMPLEX


def test_it_routes_a_short_function_request_to_the_standard_tier():
    assert tier("chat/completions", chat("write a python function to reverse a string")) \
        is Tier.STANDARD


def test_it_routes_a_long_multi_requirement_plan_to_the_complex_tier():
    text = ("We are moving our Rails monolith from Heroku to AWS with zero downtime and one "
            "ops person. Give me a phased migration plan with risks, rollback points, cost "
            "estimates and a timeline.")
    assert tier("chat/completions", chat(text)) is Tier.COMPLEX


def test_it_reads_the_instruction_not_the_pasted_document():
    document = "\n".join(f"[10:{i:02d}] Priya: we need a migration plan and a roadmap, "
                         f"analyse the architecture trade-offs" for i in range(30))
    summary = assess(endpoint="chat/completions",
                     body=chat("Summarize this meeting in 3 bullets:\n" + document))
    assert tier_for(score=summary.score) is Tier.STANDARD
    assert "planning" not in dict(summary.signals)


def test_it_counts_the_length_exactly_however_long_the_prompt():
    short = assess(endpoint="completions", body={"prompt": "a" * 4_000})
    long = assess(endpoint="completions", body={"prompt": "a" * 400_000})
    assert short.tokens_in == pytest.approx(1_000, abs=10)
    assert long.tokens_in == pytest.approx(100_000, abs=10)


def test_it_takes_the_asked_output_from_any_of_the_three_fields():
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        assert assess(endpoint="chat/completions", body=chat("hello", **{field: 7})).tokens_out == 7
    assert assess(endpoint="chat/completions", body=chat("hello")).tokens_out > 0


def test_it_sets_tools_required_only_when_a_call_is_forced():
    forced = [
        ("chat/completions", chat("weather in Oslo?", tools=[WEATHER], tool_choice="required")),
        ("chat/completions", chat("weather in Oslo?", tools=[WEATHER], tool_choice={
            "type": "function", "function": {"name": "get_weather"}})),
        ("messages", {"max_tokens": 50, "messages": [{"role": "user", "content": "Oslo?"}],
                      "tools": [{"name": "get_weather", "input_schema": {}}],
                      "tool_choice": {"type": "any"}}),
        ("responses", {"input": "Oslo?", "tools": [{"type": "function", "name": "w"}],
                       "tool_choice": "required"}),
    ]
    for endpoint, body in forced:
        assert assess(endpoint=endpoint, body=body).tools_required, body
    free = chat("weather in Oslo?", tools=[WEATHER], tool_choice="auto")
    assert not assess(endpoint="chat/completions", body=free).tools_required
    no_tools = chat("weather in Oslo?", tool_choice="required")
    assert not assess(endpoint="chat/completions", body=no_tools).tools_required


def test_it_sets_strict_schema_for_a_strict_json_schema_only():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    strict = chat("extract", response_format={"type": "json_schema", "json_schema": {
        "name": "x", "strict": True, "schema": schema}})
    loose = chat("extract", response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": schema}})
    responses = {"input": "extract", "text": {"format": {
        "type": "json_schema", "name": "x", "strict": True, "schema": schema}}}
    assert assess(endpoint="chat/completions", body=strict).strict_schema
    assert not assess(endpoint="chat/completions", body=loose).strict_schema
    assert not assess(endpoint="chat/completions",
                      body=chat("x", response_format={"type": "json_object"})).strict_schema
    assert assess(endpoint="responses", body=responses).strict_schema


def test_it_detects_images_in_every_body_shape():
    bodies = [
        ("chat/completions", {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
        ("messages", {"max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "what is this"}]}]}),
        ("responses", {"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this"},
            {"type": "input_image", "image_url": "https://example.com/a.png"}]}]}),
    ]
    for endpoint, body in bodies:
        found = assess(endpoint=endpoint, body=body)
        assert found.has_images, endpoint
        assert found.tokens_in > 700, endpoint     # an image is priced as prompt tokens
    assert not assess(endpoint="chat/completions", body=chat("what is this")).has_images


def test_it_reads_system_prompts_and_instructions_of_every_shape():
    system = "You are a senior SRE. " * 60
    shapes = [
        ("chat/completions", {"messages": [{"role": "system", "content": system},
                                           {"role": "user", "content": "hi"}]}),
        ("messages", {"system": [{"type": "text", "text": system}], "max_tokens": 50,
                      "messages": [{"role": "user", "content": "hi"}]}),
        ("responses", {"instructions": system, "input": "hi"}),
    ]
    for endpoint, body in shapes:
        found = assess(endpoint=endpoint, body=body)
        assert found.tokens_in > 300, endpoint
        assert "system_prompt" in dict(found.signals), endpoint


def test_it_detects_non_english_text():
    for text in ("请把下面这段话翻译成英文，语气要正式",
                 "Wie viele Einwohner hat die Stadt und ist sie alt?",
                 "Переведи на английский: спасибо за письмо"):
        assert "non_english" in dict(assess(endpoint="chat/completions", body=chat(text)).signals)
    english = chat("How many people live in the city and is it old?")
    assert "non_english" not in dict(assess(endpoint="chat/completions", body=english).signals)


NESTED: list = []
for _ in range(5_000):       # deeper than the recursion limit
    NESTED = [{"type": "tool_result", "content": NESTED}]


@pytest.mark.parametrize("endpoint", ["chat/completions", "completions", "messages", "responses",
                                      "/v1/chat/completions", "", None, 3])
@pytest.mark.parametrize("body", [
    None, [], "hello", 42, {}, {"messages": "hi"}, {"messages": [None, 3, "x", {"content": 5}]},
    {"messages": [{"role": "user", "content": [None, {"type": "text", "text": 3}, 7]}]},
    {"prompt": [[1, 2, 3], "text", None, 5]}, {"input": [3, {"role": "user"}, {"type": 7}]},
    {"system": {"a": 1}, "tools": "x", "tool_choice": ["required"], "max_tokens": "9",
     "response_format": {"type": "json_schema", "json_schema": "x"}, "text": 3},
    {"tools": [{1, 2}], "tool_choice": "required", "max_tokens": True},
    {"messages": [{"role": "user", "content": "x" * 50_000 + "```" + "^" * 500}]},
    {"messages": [{"role": "user", "content": NESTED}]},
])
def test_it_scores_garbage_in_range_without_raising(endpoint, body):
    found = assess(endpoint=endpoint, body=body)
    assert 0.0 <= found.score <= 1.0 and math.isfinite(found.score)
    assert found.tokens_in >= 0 and found.tokens_out > 0


def test_it_explains_the_score_by_its_signals():
    found = assess(endpoint="chat/completions", body=chat("Prove that sqrt(2) is irrational."))
    names = dict(found.signals)
    assert names["proof"] > 0.4
    assert found.score == pytest.approx(min(1.0, 0.1 + sum(names.values())), abs=1e-3)


def test_it_maps_scores_to_tiers_with_the_thresholds():
    assert tier_for(score=0.0) is Tier.SIMPLE
    assert tier_for(score=SIMPLE_BELOW) is Tier.STANDARD
    assert tier_for(score=COMPLEX_FROM) is Tier.COMPLEX
    assert tier_for(score=0.5, simple_below=0.6, complex_from=0.9) is Tier.SIMPLE
    assert tier_for(score=0.5, simple_below=0.1, complex_from=0.2) is Tier.COMPLEX


def test_it_calibrates_thresholds_that_give_the_asked_shares():
    scores = [i / 1000 for i in range(1000)]
    simple_below, complex_from = thresholds_for_share(scores=scores, complex_share=0.2,
                                                      simple_share=0.5)
    tiers = [tier_for(score=s, simple_below=simple_below, complex_from=complex_from)
             for s in scores]
    assert tiers.count(Tier.COMPLEX) == 200
    assert tiers.count(Tier.SIMPLE) == 500
    assert 0.0 <= simple_below <= complex_from <= 1.0


def test_it_calibrates_the_edges_and_keeps_the_default_simple_threshold():
    scores = [0.1, 0.3, 0.6, 0.9]
    assert thresholds_for_share(scores=scores, complex_share=1.0)[1] == 0.0
    nothing = thresholds_for_share(scores=scores, complex_share=0.0)
    assert nothing[1] == 1.0 and not any(s >= nothing[1] for s in scores)
    simple_below, complex_from = thresholds_for_share(scores=scores, complex_share=0.5)
    assert simple_below == min(SIMPLE_BELOW, complex_from)
    assert thresholds_for_share(scores=[], complex_share=0.3) == (SIMPLE_BELOW, COMPLEX_FROM)
    assert thresholds_for_share(scores=[float("nan"), 2.0, -1.0, "x"], complex_share=0.5)[1] \
        <= 1.0
