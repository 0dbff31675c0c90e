"""Number formats for the dashboard: the same value reads the same on every page."""

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def count(value: int | None) -> str:
    """1234567 -> "1,234,567"."""
    return f"{value or 0:,}"


@register.filter
def percent(value: float | None) -> str:
    """0.4567 -> "45.7%"."""
    return f"{(value or 0) * 100:.1f}%"


@register.filter
def usd(value: Decimal | float | None) -> str:
    """Dollars with cents; a non-zero amount under a cent keeps four decimals, and one
    under $0.0001 says so, rather than reading as nothing was spent."""
    amount = Decimal(value or 0)
    if amount and abs(amount) < Decimal("0.0001"):
        return "< $0.0001"
    if amount and abs(amount) < Decimal("0.01"):
        return f"${amount.quantize(Decimal('0.0001'), ROUND_HALF_UP)}"
    return f"${amount.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


@register.filter
def ago(moment: datetime | None) -> str:
    """"just now", "3 minutes ago", "2 days ago"."""
    if moment is None:
        return ""
    if (timezone.now() - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment).split(',')[0]} ago"


@register.filter
def ms(value: float | None) -> str:
    """Latency: "—" when unknown, ms below a second, seconds above."""
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


@register.filter
def evidence_value(value: object) -> str:
    """An evidence entry of a recommendation, readable (lists joined, floats short)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(evidence_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {evidence_value(v)}" for k, v in value.items())
    return str(value)
