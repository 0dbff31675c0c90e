from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from organizations.errors import OrganizationNotFound
from organizations.selectors import organization_get_by_slug
from organizations.services import Actor
from routing.models import ModelRoute
from routing.services import route_set, route_target_text, route_targets_parse


class Command(BaseCommand):
    help = ("Create or replace the route of a model name (a real model or an alias): its "
            "targets are tried in the order of the --target flags (priority), split by "
            "weight (weighted) or fastest first (latency).")

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--model", required=True,
                            help="the model name clients ask for, e.g. gpt-4o-mini or fast")
        parser.add_argument(
            "--target", required=True, action="append", dest="targets",
            metavar="PROVIDER:UPSTREAM_MODEL[:WEIGHT]",
            help="a provider of the organization and the model it is asked for; "
                 "@ROUTE[:WEIGHT] for an alias of another route; repeat for more")
        parser.add_argument("--strategy", default=ModelRoute.Strategy.PRIORITY,
                            choices=ModelRoute.Strategy.values)

    def handle(self, *args, org: str, model: str, targets: list[str], strategy: str,
               **options):
        try:
            organization = organization_get_by_slug(slug=org)
            specs = route_targets_parse(organization=organization, texts=targets)
            route, created = route_set(organization=organization, name=model,
                                       targets=specs, strategy=strategy,
                                       actor=Actor(label="manage.py set_route"))
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        shown = ", ".join(route_target_text(target)
                          for target in route.targets.select_related("provider"))
        self.stdout.write(f"{organization.slug}: {'created' if created else 'replaced'} "
                          f"{route.name} ({route.strategy}) -> {shown}")
