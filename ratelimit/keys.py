"""The limits' Redis keys, in one place. Every key of an organization carries its id as
a hash tag ({12}), so one request's keys sit in one slot of a Redis Cluster and its
script can take them all."""

from ratelimit.periods import BudgetPeriod


def scope_of(key_id: int | None, model: str = "") -> str:
    """Names a limit's or budget's scope: o (the organization) or k<id>, then the model."""
    who = "o" if key_id is None else f"k{key_id}"
    return f"{who}:m={model}" if model else who


def rate_key(org_id: int, scope: str, what: str) -> str:
    """A limit's state: `what` is rpm, rpd, tpm (GCRA) or conc (leases)."""
    return f"rl:{{{org_id}}}:{scope}:{what}"


def budget_key(org_id: int, scope: str, period: BudgetPeriod) -> str:
    return f"rl:{{{org_id}}}:b:{scope}:{period.name}:{period.label}"


def address_key(address: str) -> str:
    return f"rl:addr:{{{address}}}"
