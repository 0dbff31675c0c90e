"""Time to first byte per target, for the `latency` strategy: an exponentially weighted
moving average, kept per process.

Each process measures its own path to the upstreams and latency need not agree across
processes, so nothing is shared: noting a sample is a dict write, reading one a dict read.
"""

from collections.abc import Mapping

# Weight of the newest sample: about the last five requests count.
ALPHA = 0.3

_ewma: dict[str, float] = {}


def latency_note(*, key: str, seconds: float) -> None:
    """Fold one successful attempt's time to first byte into the target's average."""
    previous = _ewma.get(key)
    _ewma[key] = seconds if previous is None else previous + ALPHA * (seconds - previous)


def latencies() -> Mapping[str, float]:
    """The averages by target key (read-only; a target never measured is absent)."""
    return _ewma
