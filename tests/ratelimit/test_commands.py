"""set_limits and set_budget as an operator runs them."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from organizations.services import api_key_create
from ratelimit.models import Budget, Limit, LimitChange, LimitPolicy

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_it_sets_an_orgs_limits_and_audits_them(world):
    out = run("set_limits", "--org", world.a.org.slug, "--rpm", "60", "--tpm", "10000")
    limit = Limit.objects.get(organization=world.a.org)
    assert (limit.requests_per_minute, limit.tokens_per_minute, limit.api_key) == (
        60, 10000, None)
    assert "rpm 60" in out and "tpm 10000" in out
    assert LimitChange.objects.get().actor_label == "manage.py set_limits"


def test_it_sets_a_keys_limits_for_one_model(world):
    key = api_key_create(organization=world.a.org, name="batch")
    run("set_limits", "--org", world.a.org.slug, "--key", key.api_key.prefix,
        "--model", "gpt-4o", "--rpd", "1000", "--concurrent", "4")
    limit = Limit.objects.get()
    assert (limit.api_key, limit.model, limit.requests_per_day, limit.concurrent_requests) == (
        key.api_key, "gpt-4o", 1000, 4)


def test_it_sets_the_policy(world):
    assert run("set_limits", "--org", world.a.org.slug, "--fail-closed") == (
        f"{world.a.org.slug}: fails closed")
    assert LimitPolicy.objects.get(organization=world.a.org).fail_closed


def test_it_refuses_what_it_cannot_do(world):
    with pytest.raises(CommandError, match="at least one"):
        run("set_limits", "--org", world.a.org.slug)
    with pytest.raises(CommandError, match="No organization"):
        run("set_limits", "--org", "nope", "--rpm", "1")
    # Another organization's key is no key of this one.
    other = api_key_create(organization=world.b.org).api_key.prefix
    with pytest.raises(CommandError, match="No API key"):
        run("set_limits", "--org", world.a.org.slug, "--key", other, "--rpm", "1")
    with pytest.raises(CommandError, match="0 or more"):
        run("set_limits", "--org", world.a.org.slug, "--rpm", "-5")
    assert not Limit.objects.exists()


def test_it_sets_and_removes_budgets(world):
    out = run("set_budget", "--org", world.a.org.slug, "--period", "month", "--usd", "250",
              "--soft")
    budget = Budget.objects.get()
    assert (budget.period, budget.limit_usd, budget.soft) == ("month", Decimal(250), True)
    assert "soft month budget of $250.0000" in out
    run("set_budget", "--org", world.a.org.slug, "--period", "month", "--delete")
    assert not Budget.objects.exists()
    assert [c.actor_label for c in LimitChange.objects.all()] == ["manage.py set_budget"] * 2


def test_it_refuses_a_bad_budget(world):
    with pytest.raises(CommandError, match="must be a number"):
        run("set_budget", "--org", world.a.org.slug, "--period", "day", "--usd", "lots")
    with pytest.raises(CommandError, match="No such budget"):
        run("set_budget", "--org", world.a.org.slug, "--period", "day", "--delete")
