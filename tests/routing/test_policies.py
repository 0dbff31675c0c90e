"""The routing policy: its rules at save (routing.policies), the management API
(/api/routing/policy), set_routing_policy and its calibration, the admin."""

import io
import json
from importlib import import_module

import pytest
from django.apps import apps as django_apps
from django.core.management import CommandError, call_command
from django.test import Client

from analytics.models import RequestLog
from organizations.models import AuditEntry
from organizations.selectors import provider_for_org
from routing import complexity
from routing.errors import RouteInUse, RoutingPolicyInvalid
from routing.models import ModelRoute, RoutingPolicy
from routing.policies import routing_policy_set
from routing.selectors import routing_table_for_org
from routing.services import TargetSpec, route_delete, route_update
from tests.commands import last_line, manage
from tests.dashboard.helpers import make_request_log
from tests.organizations.apiclients import admin_key_client, assert_error, key_client, session_for
from tests.routing.helpers import make_route

pytestmark = pytest.mark.django_db
URL = "/api/routing/policy"
TIERS = {"simple_model": "gpt-4o-mini", "standard_model": "gpt-4.1-mini",
         "complex_model": "gpt-4o"}


@pytest.fixture(autouse=True)
def prices(db):
    """The model table of a fresh install (a transactional test before may have emptied it)."""
    import_module("analytics.migrations.0003_model_prices_data").add_prices(django_apps, None)
    import_module("analytics.migrations.0009_model_capabilities_data").add_capabilities(
        django_apps, None)


def put(client, **body):
    return client.put(URL, body, content_type="application/json")


def test_it_creates_with_the_classifiers_defaults_and_bumps_the_generation_on_change(world):
    policy, created = routing_policy_set(organization=world.a.org, mode="shadow", **TIERS)
    same, changed = routing_policy_set(organization=world.a.org, mode="shadow")
    on, _ = routing_policy_set(organization=world.a.org, mode="on", actor="test")

    assert created and not changed
    assert (policy.simple_below, policy.complex_from, policy.generation) == (
        complexity.SIMPLE_BELOW, complexity.COMPLEX_FROM, 1)
    assert (same.generation, on.generation, on.mode) == (1, 2, "on")
    assert list(AuditEntry.objects.filter(organization=world.a.org,
                                          action__startswith="routing_policy.")
                .order_by("pk").values_list("action", "before__mode", "after__mode")) == [
        ("routing_policy.create", None, "shadow"), ("routing_policy.update", "shadow", "on")]


def test_it_snapshots_the_tiers_with_their_capabilities(world):
    make_route(world.a.org, "fast", (provider_for_org(organization=world.a.org),
                                     "gpt-3.5-turbo"))
    routing_policy_set(organization=world.a.org, mode="on", simple_model="@fast",
                       standard_model="gpt-4o-mini", complex_model="gpt-4o",
                       apply_to=["gpt-4-turbo"])

    policy = routing_table_for_org(organization_id=world.a.org.pk).policy

    simple, standard, _ = policy.tiers
    assert (simple.name, simple.priced_as, simple.context_window, simple.images) == (
        "fast", "gpt-3.5-turbo", 16_385, False)
    assert (standard.context_window, standard.json_schema, standard.images) == (
        128_000, True, True)
    assert policy.apply_to == frozenset({"gpt-4-turbo"})
    assert policy.applies_to("auto") and not policy.applies_to("gpt-4o")


@pytest.mark.parametrize(("fields", "words", "param"), [
    ({"simple_model": "no-such-model"}, "neither in the model table", "simple_model"),
    ({"standard_model": "@nowhere"}, "not a route of this organization", "standard_model"),
    ({"complex_model": "auto"}, "must name a model", "complex_model"),
    ({"simple_below": 1.5}, "between 0 and 1", "simple_below"),
    ({"complex_from": -0.1}, "between 0 and 1", "complex_from"),
    ({"simple_below": 0.8, "complex_from": 0.3}, "out of order", "simple_below"),
    ({"mode": "sometimes"}, "Unknown mode", "mode"),
    ({"apply_to": ["auto"]}, "is not a model name", "apply_to"),
])
def test_it_refuses_a_bad_policy_at_save(world, fields, words, param):
    with pytest.raises(RoutingPolicyInvalid) as refused:
        routing_policy_set(organization=world.a.org, **{"mode": "on", **TIERS, **fields})

    assert words in str(refused.value) and refused.value.param == param
    assert not RoutingPolicy.objects.exists()


def test_it_refuses_another_organizations_route_as_a_tier(world):
    make_route(world.b.org, "theirs", (provider_for_org(organization=world.b.org), "gpt-4o"))

    with pytest.raises(RoutingPolicyInvalid, match="not a route of this organization"):
        routing_policy_set(organization=world.a.org, **{**TIERS, "simple_model": "@theirs"})


def test_it_sets_and_reads_the_policy_through_the_api(world):
    client = admin_key_client(world.a.org)
    assert_error(client.get(URL), 404, "no routing policy")

    created = put(client, mode="on", **TIERS, apply_to=["gpt-4-turbo"])
    changed = put(client, complex_from=0.7)

    assert created.status_code == 200, created.content
    assert changed.json() | {"updated_at": None} == {
        "mode": "on", **TIERS, "simple_below": complexity.SIMPLE_BELOW, "complex_from": 0.7,
        "apply_to": ["gpt-4-turbo"], "generation": 2, "updated_at": None}
    assert client.get(URL).json()["generation"] == 2
    assert_error(put(client, simple_model="nope"), 400, "neither in the model table",
                 param="simple_model")
    assert_error(put(client, mode="maybe"), 400, param="mode")


def test_it_lets_a_member_read_but_not_write_and_refuses_a_proxy_key(world):
    routing_policy_set(organization=world.a.org, mode="shadow", **TIERS)

    assert session_for(world.bob).get(URL).json()["mode"] == "shadow"
    assert_error(put(session_for(world.bob), mode="on"), 403, "Only an owner or admin")
    assert_error(key_client(world.a.raw_key).get(URL), 403, "proxy scope")
    assert_error(Client().get(URL), 401)
    assert RoutingPolicy.objects.get().mode == "shadow"


def test_it_checks_ownership(world):
    routing_policy_set(organization=world.b.org, mode="on", **TIERS)

    for client in (session_for(world.alice), admin_key_client(world.a.org)):
        assert_error(client.get(URL), 404)
        assert_error(client.get(URL, {"org": world.b.org.slug}), 404)
        assert_error(client.put(f"{URL}?org={world.b.org.slug}", {"mode": "off"},
                                content_type="application/json"), 404)
    assert RoutingPolicy.objects.get().mode == "on"


def test_it_documents_the_endpoints_in_the_openapi_schema(world):
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert set(schema["paths"]["/api/routing/policy"]) >= {"get", "put"}
    assert "get" in schema["paths"]["/api/analytics/routing"]
    assert "get" in schema["paths"]["/api/feedback"]


def test_it_refuses_a_bad_policy_in_the_admin(world, admin_client):
    response = admin_client.post("/admin/routing/routingpolicy/add/", {
        "organization": world.a.org.pk, "mode": "on", **TIERS, "simple_model": "@nowhere",
        "simple_below": "0.2", "complex_from": "0.6", "apply_to": ""})
    saved = admin_client.post("/admin/routing/routingpolicy/add/", {
        "organization": world.a.org.pk, "mode": "on", **TIERS, "simple_below": "0.2",
        "complex_from": "0.6", "apply_to": "gpt-4-turbo, o3"})

    assert "not a route of this organization" in response.content.decode()
    assert saved.status_code == 302
    policy = RoutingPolicy.objects.get()
    assert (policy.apply_to, policy.complex_from) == (["gpt-4-turbo", "o3"], 0.6)
    assert AuditEntry.objects.filter(action="routing_policy.create").count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_sets_and_calibrates_from_the_command_line(world, tmp_path):
    org = world.a.org
    out = last_line(manage("set_routing_policy", "--org", org.slug, "--mode", "shadow",
                           "--tier", "simple=gpt-4o-mini", "--tier", "standard=gpt-4.1-mini",
                           "--tier", "complex=gpt-4o", "--thresholds", "0.2,0.6",
                           "--apply-to", "gpt-4-turbo"))
    assert out == (f"{org.slug}: routing shadow; simple=gpt-4o-mini (below 0.2), "
                   "standard=gpt-4.1-mini, complex=gpt-4o (from 0.6); also for: gpt-4-turbo; "
                   "generation 1")
    for n in range(10):  # scores 0.05 .. 0.95: the top fifth is 0.85 and up
        make_request_log(org, route_mode="shadow", route_tier="simple",
                         route_score=0.05 + n / 10, prompt_tokens=1000, completion_tokens=100)
    make_request_log(world.b.org, route_mode="on", route_score=0.99)  # not A's

    calibrated = manage("set_routing_policy", "--org", org.slug,
                        "--calibrate-complex-share", "0.2", "--from-records", "100")

    assert calibrated.returncode == 0, calibrated.stderr
    lines = calibrated.stdout.splitlines()
    assert lines[0].startswith("calibrated on the last 10 scored requests (10)")
    assert lines[3].split() == ["complex", "20.0%"]
    assert "projected saving:" in calibrated.stdout
    policy = RoutingPolicy.objects.get(organization=org)
    assert sum(score >= policy.complex_from for score in RequestLog.objects.filter(
        organization=org).values_list("route_score", flat=True)) == 2
    assert policy.generation == 2

    # The rest in this process: what is checked is the command's logic, not its start.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": text}]})
                                 for text in ("hi", "thanks!", "Prove that sqrt(2) is "
                                              "irrational, step by step, rigorously.")))
    out = io.StringIO()
    call_command("set_routing_policy", "--org", org.slug, "--calibrate-complex-share",
                 "0.34", "--prompts", str(prompts), stdout=out)
    assert f"calibrated on {prompts} (3)" in out.getvalue()
    for args, words in (
            (("--org", org.slug, "--tier", "simple=no-such-model"), "neither in the model table"),
            (("--org", "nope", "--mode", "on"), "No organization"),
            (("--org", world.b.org.slug, "--calibrate-complex-share", "0.2"),
             "needs a simple tier"),
            (("--org", org.slug, "--thresholds", "0.9,0.1"), "out of order"),
            (("--org", org.slug, "--calibrate-complex-share", "0.2", "--prompts",
              str(tmp_path / "missing.jsonl")), "Cannot read")):
        with pytest.raises(CommandError, match=words):
            call_command("set_routing_policy", *args, stdout=io.StringIO())


def test_it_keeps_a_route_a_tier_names_from_being_deleted_or_renamed(world):
    route = make_route(world.a.org, "fast", (provider_for_org(organization=world.a.org),
                                             "gpt-4o-mini"))
    routing_policy_set(organization=world.a.org, **{**TIERS, "simple_model": "@fast"})

    with pytest.raises(RouteInUse, match="tier of the routing policy"):
        route_delete(route=route)
    with pytest.raises(RouteInUse, match="tier of the routing policy"):
        route_update(route=route, name="faster", targets=[
            TargetSpec(provider_for_org(organization=world.a.org), "gpt-4o-mini")])
    assert ModelRoute.objects.get().name == "fast"
