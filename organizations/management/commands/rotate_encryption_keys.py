from django.core.management.base import BaseCommand, CommandError

from organizations.crypto import CredentialDecryptionError
from organizations.services import provider_credentials_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every provider credential with the first key of "
        "COGNITUDE_ENCRYPTION_KEYS; afterwards the older keys can be dropped."
    )

    def handle(self, *args, **options):
        try:
            count = provider_credentials_rotate()
        except CredentialDecryptionError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"re-encrypted {count}")
