from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from organizations.errors import OrganizationNotFound
from organizations.models import Membership
from organizations.selectors import organization_get_by_slug
from organizations.services import membership_set


class Command(BaseCommand):
    help = "Add a user (created without a password if new) to an organization with a role."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True)
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", default="member", choices=Membership.Role.values)

    def handle(self, *args, org: str, email: str, role: str, **options):
        try:
            organization = organization_get_by_slug(slug=org)
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        users = get_user_model().objects
        user = users.filter(email__iexact=email).order_by("pk").first()
        if user is None:
            user = users.create_user(username=email, email=email)
            # A password never goes on a command line (shell history, ps); Django's own
            # command asks for it twice and applies the password validators.
            self.stdout.write(f"Created {email} without a password; to let them log in "
                              f"to the dashboard: python manage.py changepassword {email}")
        membership_set(organization=organization, user=user, role=role)
        self.stdout.write(f"{email} is {role} of {organization.slug}")
