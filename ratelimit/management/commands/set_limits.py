from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from organizations.errors import ApiKeyNotFound, OrganizationNotFound
from organizations.selectors import organization_get_by_slug
from ratelimit.selectors import api_key_by_prefix
from ratelimit.services import Actor, limit_policy_set, limit_set

OPTIONS = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute",
           "rpd": "requests_per_day", "concurrent": "concurrent_requests"}


class Command(BaseCommand):
    help = ("Set an organization's limits (or a key's, or either narrowed to a model). "
            "Limits not named keep their value; 0 removes one. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--key", help="API key prefix (cog_ and 8 characters)")
        parser.add_argument("--model", default="", help="only requests for this model")
        parser.add_argument("--rpm", type=int, help="requests per minute")
        parser.add_argument("--tpm", type=int, help="tokens per minute")
        parser.add_argument("--rpd", type=int, help="requests per day")
        parser.add_argument("--concurrent", type=int, help="requests in flight at once")
        policy = parser.add_mutually_exclusive_group()
        policy.add_argument("--fail-closed", action="store_true",
                            help="answer 503 while the limits Redis is unreachable")
        policy.add_argument("--fail-open", action="store_true",
                            help="serve, held to per-process limits (the default)")

    def handle(self, *args, org: str, key: str | None, model: str, fail_closed: bool,
               fail_open: bool, **options):
        values = {field: options[name] for name, field in OPTIONS.items()
                  if options[name] is not None}
        if not values and not (fail_closed or fail_open):
            raise CommandError("Name at least one of --rpm, --tpm, --rpd, --concurrent, "
                               "--fail-closed, --fail-open")
        actor = Actor(label="manage.py set_limits")
        try:
            organization = organization_get_by_slug(slug=org)
            api_key = api_key_by_prefix(organization=organization, prefix=key) if key else None
            if values:
                limit = limit_set(organization=organization, api_key=api_key, model=model,
                                  values=values, actor=actor)
                self.stdout.write(_describe(limit))
            if fail_closed or fail_open:
                limit_policy_set(organization=organization, fail_closed=fail_closed,
                                 actor=actor)
                self.stdout.write(f"{organization.slug}: fails "
                                  f"{'closed' if fail_closed else 'open'}")
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        except ApiKeyNotFound as exc:
            raise CommandError(f"No API key {key!r} in {org!r}") from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc


def _describe(limit) -> str:
    if limit is None:
        return "no limits left for that scope: removed"
    parts = [f"{name} {getattr(limit, field)}" for name, field in OPTIONS.items()
             if getattr(limit, field) is not None]
    return f"{limit}: {', '.join(parts)}"
