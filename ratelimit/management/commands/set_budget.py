from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from organizations.errors import ApiKeyNotFound, OrganizationNotFound
from organizations.selectors import organization_get_by_slug
from ratelimit.errors import BudgetNotFound
from ratelimit.models import Budget
from ratelimit.selectors import api_key_by_prefix, budget_find
from ratelimit.services import Actor, budget_delete, budget_set


class Command(BaseCommand):
    help = ("Set an organization's (or a key's) spend cap in USD for a day or a month, in "
            "the organization's time zone. Hard unless --soft. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--key", help="API key prefix (cog_ and 8 characters)")
        parser.add_argument("--period", required=True, choices=Budget.Period.values)
        amount = parser.add_mutually_exclusive_group(required=True)
        amount.add_argument("--usd", help="the cap, in USD")
        amount.add_argument("--delete", action="store_true", help="remove this budget")
        parser.add_argument("--soft", action="store_true",
                            help="allow requests past it and record the crossing")

    def handle(self, *args, org: str, key: str | None, period: str, usd: str | None,
               delete: bool, soft: bool, **options):
        actor = Actor(label="manage.py set_budget")
        try:
            organization = organization_get_by_slug(slug=org)
            api_key = api_key_by_prefix(organization=organization, prefix=key) if key else None
            if delete:
                budget = budget_find(organization=organization, api_key=api_key,
                                     period=period)
                budget_delete(budget=budget, actor=actor)
                self.stdout.write("removed")
                return
            try:
                amount = Decimal(usd)
            except InvalidOperation as exc:
                raise CommandError(f"--usd must be a number (got {usd!r})") from exc
            budget = budget_set(organization=organization, api_key=api_key, period=period,
                                limit_usd=amount, soft=soft, actor=actor)
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        except ApiKeyNotFound as exc:
            raise CommandError(f"No API key {key!r} in {org!r}") from exc
        except BudgetNotFound as exc:
            raise CommandError("No such budget") from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(str(budget))
