from django.core.management.base import BaseCommand, CommandError

from organizations.models import ApiKey
from organizations.services import Actor, api_key_revoke


class Command(BaseCommand):
    help = "Revoke the API key with this prefix (as shown in lists, e.g. cog_AbCd1234)."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix: str, **options):
        api_key = ApiKey.objects.filter(prefix=prefix).first()
        if api_key is None:
            raise CommandError(f"No API key with prefix {prefix!r}")
        api_key_revoke(api_key=api_key, actor=Actor(label="manage.py revoke_api_key"))
        self.stdout.write(f"revoked {api_key.prefix}")
