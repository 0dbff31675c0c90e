"""What can go wrong finding or changing an organization's routes: raised by routing's
selectors and services, translated at the edge (a view's 404 or 409, a CommandError)."""


class RouteNotFound(Exception):
    """No such route in this organization."""


class RouteInUse(Exception):
    """Another route of the organization is an alias of this one: it cannot be deleted
    or renamed from under them."""


class RoutingPolicyInvalid(Exception):
    """A routing policy that cannot be saved; `param` names the field at fault."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class RoutingPolicyNotFound(Exception):
    """The organization has no routing policy."""
