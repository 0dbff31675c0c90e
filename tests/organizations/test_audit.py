"""The audit trail: who created, changed, revoked or deleted keys, providers and routes,
through every path that writes them (API, dashboard, admin, commands), never holding a
secret; read through /api/audit (owners, admins, admin keys), the dashboard and admin."""

import json

import pytest
from django.core.management import call_command

from organizations.models import ApiKey, AuditEntry, Provider
from organizations.services import (
    Actor,
    api_key_create,
    audit_record,
    provider_update,
)
from routing.services import route_set, route_targets_parse
from tests.organizations.apiclients import admin_key_client, assert_error, session_for

pytestmark = pytest.mark.django_db


def entries(organization) -> list[tuple[str, str, str]]:
    return [(e.actor_label, e.action, e.object_label)
            for e in AuditEntry.objects.filter(organization=organization).order_by("pk")]


def test_it_records_who_created_and_revoked_a_key_through_the_api(world):
    client = session_for(world.alice)
    AuditEntry.objects.all().delete()

    created = client.post("/api/keys", {"name": "ci"}, content_type="application/json").json()
    client.post(f"/api/keys/{created['id']}/revoke")

    [create, revoke] = AuditEntry.objects.filter(organization=world.a.org).order_by("pk")
    assert (create.actor_user, create.action, create.object_id) == (
        world.alice, "api_key.create", str(created["id"]))
    assert create.before is None and create.after["name"] == "ci"
    assert (revoke.action, revoke.before["revoked_at"], revoke.after["revoked_at"] is None) == (
        "api_key.revoke", None, False)
    # The raw key is nowhere in the trail.
    assert created["key"] not in json.dumps([create.after, revoke.before, revoke.after])


def test_it_names_the_admin_key_that_made_a_change(world):
    client = admin_key_client(world.a.org)
    admin_key = ApiKey.objects.filter(organization=world.a.org, scope="admin").get()

    client.post("/api/providers", {"name": "groq", "base_url": "https://api.groq.com/v1",
                                   "api_key": "sk-groq-secret-9876"},
                content_type="application/json")

    entry = AuditEntry.objects.get(action="provider.create")
    assert (entry.actor_api_key, entry.actor_label) == (admin_key,
                                                        f"API key {admin_key.prefix}")
    assert entry.after["api_key_last4"] == "9876"
    assert "sk-groq-secret" not in json.dumps(entry.after)


def test_it_records_a_replaced_provider_key_without_the_key(world):
    provider = Provider.objects.get(organization=world.a.org)

    provider_update(provider=provider, api_key="sk-brand-new-1234",
                    actor=Actor.of_user(world.alice))

    entry = AuditEntry.objects.get(action="provider.update")
    assert entry.after["key_replaced"] is True and entry.after["api_key_last4"] == "1234"
    assert "sk-brand-new" not in json.dumps([entry.before, entry.after])
    assert world.a.provider_key not in json.dumps([entry.before, entry.after])


def test_it_records_nothing_for_a_change_that_changes_nothing(world):
    provider = Provider.objects.get(organization=world.a.org)
    before = AuditEntry.objects.count()

    provider_update(provider=provider, enabled=True, actor=Actor.of_user(world.alice))

    assert AuditEntry.objects.count() == before


def test_it_drops_secret_fields_whatever_the_caller_passes(world):
    entry = audit_record(organization=world.a.org, actor="a test", action="thing.update",
                         target=world.a.org,
                         before={"api_key": "sk-x", "webhook_secret": "s", "n": 1},
                         after={"password": "p", "nested": {"token": "t", "ok": 2}, "n": 2})

    assert (entry.before, entry.after) == ({"n": 1}, {"nested": {"ok": 2}, "n": 2})


def test_it_records_routes_and_provider_deletes_from_the_dashboard(world):
    client = session_for(world.alice)
    slug = world.a.org.slug
    provider = Provider.objects.create(organization=world.a.org, name="spare", kind="openai",
                                       base_url="https://api.example.com/v1",
                                       api_key_encrypted="x", api_key_last4="abcd")

    client.post(f"/orgs/{slug}/routes/", {"name": "fast", "strategy": "priority",
                                         "retry_on": ["connect"],
                                         "targets": "default:gpt-4o-mini"})
    client.post(f"/orgs/{slug}/providers/{provider.pk}/delete/")

    assert entries(world.a.org)[-2:] == [
        ("alice", "route.create", "fast"), ("alice", "provider.delete", str(provider))]
    route_entry = AuditEntry.objects.get(action="route.create")
    assert route_entry.after["targets"] == ["default:gpt-4o-mini:1"]


def test_it_names_the_command_that_made_a_change(world):
    call_command("create_api_key", "--org", world.a.org.slug, "--name", "cron",
                 stdout=open("/dev/null", "w"))

    assert entries(world.a.org)[-1] == ("manage.py create_api_key", "api_key.create",
                                        ApiKey.objects.get(name="cron").__str__())


def test_it_shows_owners_the_trail_and_never_another_organizations(world):
    route_set(organization=world.b.org, name="theirs", actor=Actor.of_user(world.charlie),
              targets=route_targets_parse(organization=world.b.org,
                                          texts=["default:gpt-4o"]))
    api_key_create(organization=world.a.org, name="mine", actor=Actor.of_user(world.alice))

    body = session_for(world.alice).get("/api/audit").json()

    assert body[0]["action"] == "api_key.create" and body[0]["actor"] == "alice"
    assert "theirs" not in json.dumps(body)
    assert {row["object_label"] for row in body} >= {str(ApiKey.objects.get(name="mine"))}
    assert_error(session_for(world.alice).get(f"/api/audit?org={world.b.org.slug}"), 404)


def test_it_keeps_the_trail_from_members_and_proxy_keys(world):
    assert_error(session_for(world.bob).get("/api/audit"), 403, "owner or admin")
    proxy = api_key_create(organization=world.a.org).raw_key
    response = session_for(world.bob).get("/api/audit",
                                          headers={"Authorization": f"Bearer {proxy}"})
    assert_error(response, 403, "proxy scope")


def test_it_pages_back_by_id(world):
    newest = AuditEntry.objects.filter(organization=world.a.org).order_by("-pk").first()

    body = admin_key_client(world.a.org).get(f"/api/audit?before={newest.pk}").json()

    assert all(row["id"] < newest.pk for row in body)
    for bad in ("x", "%D9%A3", "%F0%9D%9F%97", f"{newest.pk}&before=1"):  # '٣', '𝟗': not ids
        assert_error(admin_key_client(world.a.org).get(f"/api/audit?before={bad}"), 400,
                     param="before")


def test_it_shows_the_trail_read_only_in_admin(world, admin_client):
    entry = AuditEntry.objects.filter(organization=world.a.org).first()

    assert admin_client.get("/admin/organizations/auditentry/").status_code == 200
    assert admin_client.get(
        f"/admin/organizations/auditentry/{entry.pk}/change/").status_code == 200
    assert admin_client.post(f"/admin/organizations/auditentry/{entry.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
