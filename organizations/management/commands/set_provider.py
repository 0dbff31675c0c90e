from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from organizations.errors import OrganizationNotFound
from organizations.models import Provider
from organizations.selectors import organization_get_by_slug
from organizations.services import Actor, provider_credential_set


class Command(BaseCommand):
    help = ("Create or replace an organization's default provider (named \"default\" when "
            "created): the single-provider setup. add_provider adds more.")

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--kind", default="openai", choices=Provider.Kind.values)
        parser.add_argument("--base-url", required=True)
        parser.add_argument("--api-key", required=True)

    def handle(self, *args, org: str, kind: str, base_url: str, api_key: str, **options):
        try:
            organization = organization_get_by_slug(slug=org)
            credential = provider_credential_set(
                organization=organization, kind=kind, base_url=base_url, api_key=api_key,
                actor=Actor(label="manage.py set_provider"),
            )
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"{organization.slug}: {credential.kind} at {credential.base_url}")
