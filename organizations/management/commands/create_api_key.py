from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from organizations.errors import OrganizationNotFound
from organizations.models import ApiKey
from organizations.selectors import organization_get_by_slug
from organizations.services import Actor, api_key_create


class Command(BaseCommand):
    help = "Create an API key; prints the raw key (shown only this once) on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--expires-days", type=int, default=None)
        parser.add_argument("--scope", default=ApiKey.Scope.PROXY, choices=ApiKey.Scope.values,
                            help="proxy (default): /v1 and analytics; admin: also manages "
                                 "providers, routes and keys through /api")

    def handle(self, *args, org: str, name: str, expires_days: int | None, scope: str,
               **options):
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be positive")
        try:
            organization = organization_get_by_slug(slug=org)
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        created = api_key_create(
            organization=organization,
            name=name,
            scope=scope,
            expires_in=timedelta(days=expires_days) if expires_days else None,
            actor=Actor(label="manage.py create_api_key"),
        )
        self.stdout.write(created.raw_key)
