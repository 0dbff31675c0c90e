from django.core.management.base import BaseCommand

from organizations.services import organization_create


class Command(BaseCommand):
    help = "Create an organization; prints its slug on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--slug", default=None)

    def handle(self, *args, name: str, slug: str | None, **options):
        self.stdout.write(organization_create(name=name, slug=slug).slug)
