"""What can go wrong finding an organization's limits and budgets (answered 404 at the
edge: a view's, a command's)."""


class LimitNotFound(Exception):
    """No such limit in this organization."""


class BudgetNotFound(Exception):
    """No such budget in this organization."""
