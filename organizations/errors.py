"""What can go wrong finding an organization's things: raised by selectors and services,
translated at the edge (a view's 404, a command's CommandError)."""


class OrganizationNotFound(Exception):
    """No such organization, or not one the caller may see: the two are one answer, so
    nobody learns which slugs exist."""


class OrganizationNotChosen(Exception):
    """A member of several organizations named none of them."""


class ApiKeyNotFound(Exception):
    """No such API key in this organization."""


class ProviderNotFound(Exception):
    """No such provider in this organization."""


class ProviderInUse(Exception):
    """The provider is a target of routes: it cannot be deleted until they stop naming it."""
