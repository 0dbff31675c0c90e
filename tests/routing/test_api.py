"""/api/routes: model routes through the management API: create or replace by name,
read, replace by id, delete; every rule of routing.services answered as a clear 400."""

import pytest
from django.test import Client

from organizations.selectors import provider_for_org
from routing.models import ModelRoute, RouteTarget
from tests.organizations.apiclients import (
    admin_key_client,
    assert_error,
    key_client,
    session_for,
)
from tests.routing.helpers import make_provider, make_route

pytestmark = pytest.mark.django_db

LIST = "/api/routes"


def detail(route) -> str:
    return f"/api/routes/{route.pk}"


def post(client, url=LIST, **body):
    return client.post(url, body, content_type="application/json")


@pytest.fixture
def backup(world):
    return make_provider(world.a.org, "backup")


def test_it_creates_then_replaces_a_route_by_name(world, backup):
    client = admin_key_client(world.a.org)

    created = post(client, name="gpt-4o", strategy="weighted", retry_on=["5xx", "429"],
                   targets=[{"provider": "default", "upstream_model": "gpt-4o", "weight": 3},
                            {"provider": "backup", "upstream_model": "gpt-4o-2024-08-06"}])

    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["name"], body["strategy"], body["retry_on"]) == (
        "gpt-4o", "weighted", ["429", "5xx"])
    assert body["targets"] == [
        {"provider": "default", "upstream_model": "gpt-4o", "weight": 3, "priority": 0,
         "enabled": True},
        {"provider": "backup", "upstream_model": "gpt-4o-2024-08-06", "weight": 1,
         "priority": 1, "enabled": True}]

    replaced = post(client, name="gpt-4o",
                    targets=[{"provider": "backup", "upstream_model": "gpt-4o",
                              "enabled": False}])

    assert replaced.status_code == 200, replaced.content
    assert replaced.json()["id"] == body["id"]
    assert replaced.json()["strategy"] == "priority"
    assert replaced.json()["retry_on"] == ["429", "5xx", "connect", "timeout"]
    assert [(t.provider.name, t.enabled) for t in RouteTarget.objects.all()] == [
        ("backup", False)]


def test_it_creates_an_alias(world):
    client = session_for(world.alice)
    post(client, name="gpt-4o-mini", targets=[{"provider": "default",
                                               "upstream_model": "gpt-4o-mini"}])

    response = post(client, name="fast", targets=[{"upstream_model": "gpt-4o-mini"},
                                                  {"provider": None, "upstream_model": "x"}])
    assert_error(response, 400, "has no route 'x'")

    response = post(client, name="fast", targets=[{"upstream_model": "gpt-4o-mini"}])
    assert response.status_code == 201, response.content
    assert response.json()["targets"][0]["provider"] is None


def test_it_lists_gets_replaces_and_deletes(world, backup):
    client = admin_key_client(world.a.org)
    default = provider_for_org(organization=world.a.org)
    route = make_route(world.a.org, "old", (default, "gpt-4o"))
    make_route(world.a.org, "another", (backup, "gpt-4o"))

    assert [r["name"] for r in client.get(LIST).json()] == ["another", "old"]
    assert client.get(detail(route)).json()["targets"][0]["provider"] == "default"

    response = client.put(detail(route), {"name": "new", "strategy": "latency", "targets": [
        {"provider": "backup", "upstream_model": "gpt-4o", "priority": 4}]},
        content_type="application/json")
    assert response.status_code == 200, response.content
    assert (response.json()["id"], response.json()["name"]) == (route.pk, "new")
    assert response.json()["targets"][0]["priority"] == 4

    assert client.delete(detail(route)).status_code == 204
    assert not ModelRoute.objects.filter(pk=route.pk).exists()


def test_it_refuses_to_delete_or_rename_an_aliased_route(world):
    client = admin_key_client(world.a.org)
    base = make_route(world.a.org, "base", (provider_for_org(organization=world.a.org), "x"))
    make_route(world.a.org, "fast", (None, "base"))

    error = assert_error(client.delete(detail(base)), 409, "aliased by 'fast'")
    assert error["code"] == "route_in_use"
    assert_error(client.put(detail(base), {"name": "renamed", "targets": [
        {"upstream_model": "fast"}]}, content_type="application/json"), 409)
    assert ModelRoute.objects.get(pk=base.pk).name == "base"


TARGET = {"provider": "default", "upstream_model": "gpt-4o"}


@pytest.mark.parametrize("body,words,param", [
    ({"targets": [{**TARGET, "provider": "nope"}]},
     ["targets[0].provider: No provider named 'nope' in this organization"],
     "targets[0].provider"),
    ({"targets": [TARGET, {**TARGET, "provider": "theirs"}]},
     ["No provider named 'theirs'"], "targets[1].provider"),
    ({"targets": [TARGET, {**TARGET, "upstream_model": "b", "weight": 0}]},
     ["weight must be between 1 and 1000000 (got 0)"], None),
    ({"targets": [TARGET, {**TARGET, "upstream_model": "b", "weight": "heavy"}]},
     ["targets[1].weight", "valid integer"], "targets[1].weight"),
    ({"targets": [{"provider": "default"}]},
     ["targets[0].upstream_model", "required"], "targets[0].upstream_model"),
    ({"targets": []}, ["at least one target"], None),
    ({"strategy": "random"}, ["strategy", "priority, weighted, latency", "random"],
     "strategy"),
    ({"retry_on": ["5xx", "4xx"]}, ["retry_on[1]", "4xx"], "retry_on[1]"),
    ({"name": ""}, ["name", "may not be blank"], "name"),
    ({"targets": [TARGET, TARGET]}, ["default:gpt-4o is listed twice"], None),
    ({"name": "loop", "targets": [{"upstream_model": "loop"}]},
     ["'loop' cannot be an alias of itself"], None),
])
def test_it_refuses_bad_input_clearly(world, body, words, param):
    make_provider(world.b.org, "theirs")

    response = post(admin_key_client(world.a.org), **{"name": "gpt-4o",
                                                      "targets": [TARGET], **body})

    assert_error(response, 400, *words, param=param)
    assert not ModelRoute.objects.filter(organization=world.a.org).exists()


def test_it_refuses_a_loop_of_aliases(world):
    client = admin_key_client(world.a.org)
    post(client, name="a", targets=[TARGET])
    post(client, name="b", targets=[{"upstream_model": "a"}])

    response = post(client, name="a", targets=[{"upstream_model": "b"}])

    assert_error(response, 400, "Aliases would loop: a -> b -> a")
    assert RouteTarget.objects.get(route__name="a").provider is not None


def test_it_lets_a_member_read_but_not_write(world):
    client = session_for(world.bob)
    route = make_route(world.a.org, "gpt-4o", (provider_for_org(organization=world.a.org), "x"))

    assert client.get(LIST).status_code == 200
    assert client.get(detail(route)).status_code == 200
    assert_error(post(client, name="new", targets=[TARGET]), 403, "Only an owner or admin")
    assert_error(client.put(detail(route), {"name": "gpt-4o", "targets": [TARGET]},
                            content_type="application/json"), 403)
    assert_error(client.delete(detail(route)), 403)
    assert list(ModelRoute.objects.values_list("name", flat=True)) == ["gpt-4o"]


def test_it_refuses_a_proxy_scoped_key_and_anonymous_callers(world):
    route = make_route(world.a.org, "gpt-4o", (provider_for_org(organization=world.a.org), "x"))
    client = key_client(world.a.raw_key)

    for response in (client.get(LIST), post(client, name="new", targets=[TARGET]),
                     client.get(detail(route)), client.delete(detail(route))):
        assert_error(response, 403, "proxy scope")
    assert_error(Client().get(LIST), 401)
    assert ModelRoute.objects.filter(pk=route.pk).exists()


def test_it_checks_ownership(world):
    theirs = make_route(world.b.org, "theirs",
                        (provider_for_org(organization=world.b.org), "gpt-4o"))
    for client in (session_for(world.alice), admin_key_client(world.a.org)):
        assert_error(client.get(detail(theirs)), 404, "No such route")
        assert_error(client.put(detail(theirs), {"name": "mine", "targets": [TARGET]},
                                content_type="application/json"), 404)
        assert_error(client.delete(detail(theirs)), 404)
        assert_error(client.get(LIST, {"org": world.b.org.slug}), 404)
        assert_error(post(client, f"{LIST}?org={world.b.org.slug}", name="x",
                          targets=[TARGET]), 404)
        assert client.get(LIST).json() == []
        # Org B's route name is no alias target for org A.
        assert_error(post(client, name="sneaky", targets=[{"upstream_model": "theirs"}]),
                     400, "has no route 'theirs'")
    stored = ModelRoute.objects.get(pk=theirs.pk)
    assert stored.name == "theirs" and stored.organization == world.b.org
    assert ModelRoute.objects.count() == 1


def test_it_documents_every_endpoint_in_the_openapi_schema(world):
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    operations = {path: set(methods) - {"parameters"} for path, methods in
                  schema["paths"].items()}
    assert operations["/api/providers"] == {"get", "post"}
    assert operations["/api/providers/{provider_id}"] == {"get", "patch", "delete"}
    assert operations["/api/routes"] == {"get", "post"}
    assert operations["/api/routes/{route_id}"] == {"get", "put", "delete"}
    assert operations["/api/keys"] == {"get", "post"}
    assert operations["/api/keys/{key_id}"] == {"get", "delete"}
    assert operations["/api/keys/{key_id}/revoke"] == {"post"}
    components = schema["components"]["schemas"]
    assert "api_key" not in components["Provider"]["properties"]
    assert components["ProviderCreateInput"]["properties"]["api_key"]["writeOnly"] is True
    assert "key" in components["ApiKeyCreated"]["properties"]
    assert "key" not in components["ApiKey"]["properties"]
