from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from organizations.errors import OrganizationNotFound
from organizations.models import Provider
from organizations.selectors import organization_get_by_slug
from organizations.services import Actor, provider_add


class Command(BaseCommand):
    help = ("Add an upstream provider to an organization. The first one (or one added "
            "with --default) receives every model that has no route of its own.")

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--name", required=True,
                            help="how routes name it (set_route --target NAME:MODEL)")
        parser.add_argument("--kind", required=True, choices=Provider.Kind.values)
        parser.add_argument("--base-url", required=True)
        parser.add_argument("--api-key", required=True)
        parser.add_argument("--api-version", default="",
                            help="Azure OpenAI's api-version (default: the adapter's, "
                                 "proxy/providers/azure.py)")
        parser.add_argument("--default", action="store_true",
                            help="make it the organization's default provider")

    def handle(self, *args, org: str, name: str, kind: str, base_url: str, api_key: str,
               api_version: str, default: bool, **options):
        try:
            organization = organization_get_by_slug(slug=org)
            provider = provider_add(organization=organization, name=name, kind=kind,
                                    base_url=base_url, api_key=api_key,
                                    api_version=api_version, is_default=default,
                                    actor=Actor(label="manage.py add_provider"))
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"{organization.slug}: {provider.name} ({provider.kind} at "
                          f"{provider.base_url}){', default' if provider.is_default else ''}")
