"""List prices (USD per million tokens, standard tier, no batch or cached-input discount)
of the common models, as the providers published them in mid-2025. Operators edit and
add prices in the admin; a new row with a later effective_from changes the price from
that day on without rewriting the past.

Patterns (with *) cover dated snapshots and provider-prefixed names; an exact name or a
longer pattern wins over a shorter one (gpt-4o-2024-05-13 over gpt-4o*, gpt-4o-mini*
over gpt-4o*). Llama prices are Together AI's, the usual host for all three sizes.
Gemini prices are for prompts up to 128k/200k tokens.
"""

from datetime import date
from decimal import Decimal

from django.db import migrations

SINCE = date(2024, 1, 1)

# (model or pattern, provider, input, output, effective_from)
PRICES = [
    # OpenAI
    ("gpt-4o*", "openai", "2.50", "10.00", SINCE),
    ("gpt-4o-2024-05-13", "openai", "5.00", "15.00", SINCE),
    ("gpt-4o-mini*", "openai", "0.15", "0.60", SINCE),
    ("gpt-4.1*", "openai", "2.00", "8.00", SINCE),
    ("gpt-4.1-mini*", "openai", "0.40", "1.60", SINCE),
    ("gpt-4.1-nano*", "openai", "0.10", "0.40", SINCE),
    ("o3*", "openai", "10.00", "40.00", date(2025, 4, 16)),
    ("o3*", "openai", "2.00", "8.00", date(2025, 6, 10)),
    ("o3-mini*", "openai", "1.10", "4.40", SINCE),
    ("o4-mini*", "openai", "1.10", "4.40", SINCE),
    ("gpt-4-turbo*", "openai", "10.00", "30.00", SINCE),
    ("gpt-3.5-turbo*", "openai", "0.50", "1.50", SINCE),
    ("text-embedding-3-small", "openai", "0.02", "0", SINCE),
    ("text-embedding-3-large", "openai", "0.13", "0", SINCE),
    ("text-embedding-ada-002", "openai", "0.10", "0", SINCE),
    # Anthropic
    ("claude-3-5-sonnet*", "anthropic", "3.00", "15.00", SINCE),
    ("claude-3-7-sonnet*", "anthropic", "3.00", "15.00", SINCE),
    ("claude-sonnet-4*", "anthropic", "3.00", "15.00", SINCE),
    ("claude-3-5-haiku*", "anthropic", "0.80", "4.00", SINCE),
    ("claude-3-haiku*", "anthropic", "0.25", "1.25", SINCE),
    ("claude-opus-4*", "anthropic", "15.00", "75.00", SINCE),
    ("claude-3-opus*", "anthropic", "15.00", "75.00", SINCE),
    # Google
    ("gemini-1.5-pro*", "google", "1.25", "5.00", SINCE),
    ("gemini-1.5-flash*", "google", "0.075", "0.30", SINCE),
    ("gemini-2.0-flash*", "google", "0.10", "0.40", SINCE),
    ("gemini-2.0-flash-lite*", "google", "0.075", "0.30", SINCE),
    ("gemini-2.5-pro*", "google", "1.25", "10.00", SINCE),
    ("gemini-2.5-flash*", "google", "0.30", "2.50", SINCE),
    ("gemini-2.5-flash-lite*", "google", "0.10", "0.40", SINCE),
    # Mistral
    ("mistral-large*", "mistral", "2.00", "6.00", SINCE),
    ("mistral-small*", "mistral", "0.10", "0.30", SINCE),
    # Meta Llama as served by Together AI (names like meta-llama/Meta-Llama-3.1-8B-...)
    ("*llama-3.1-8b*", "meta", "0.18", "0.18", SINCE),
    ("*llama-3.1-70b*", "meta", "0.88", "0.88", SINCE),
    ("*llama-3.1-405b*", "meta", "3.50", "3.50", SINCE),
]


def add_prices(apps, schema_editor):
    ModelPrice = apps.get_model("analytics", "ModelPrice")
    ModelPrice.objects.bulk_create(
        [
            ModelPrice(model=model, provider=provider, input_per_million=Decimal(inp),
                       output_per_million=Decimal(out), effective_from=since)
            for model, provider, inp, out, since in PRICES
        ],
        ignore_conflicts=True,
    )


def remove_prices(apps, schema_editor):
    ModelPrice = apps.get_model("analytics", "ModelPrice")
    for model, _, _, _, since in PRICES:
        ModelPrice.objects.filter(model=model, effective_from=since).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0002_model_price"),
    ]

    operations = [
        migrations.RunPython(add_prices, remove_prices),
    ]
