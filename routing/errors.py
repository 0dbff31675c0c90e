"""What can go wrong finding or changing an organization's routes: raised by routing's
selectors and services, translated at the edge (a view's 404 or 409, a CommandError)."""


class RouteNotFound(Exception):
    """No such route in this organization."""


class RouteInUse(Exception):
    """Another route of the organization is an alias of this one: it cannot be deleted
    or renamed from under them."""
