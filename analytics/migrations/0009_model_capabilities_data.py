"""Context windows and capabilities of the list-priced models (0003), as the providers
document them (mid-2025): what smart routing's guards check before sending a request
to a cheaper model. The window is the total the model takes (prompt and answer).

`supports_json_schema` means strict structured outputs (OpenAI's json_schema
response_format, Gemini's responseSchema, Mistral's custom schemas); Anthropic's models
of this table had none (the gateway translates a schema into a forced tool, which is
not strict). Where a family's members differ, the table keeps what all of them do:
claude-3-5-haiku launched text-only, mistral-small before 3.1 had 32k and no images,
gpt-4o-2024-05-13 predates structured outputs. Every row of a name is updated (all its
effective_from dates): capabilities are the model's, not the price's.
"""

from django.db import migrations

# model or pattern: (context_window, tools, json_schema, images)
CAPABILITIES = {
    # OpenAI
    "gpt-4o*": (128_000, True, True, True),
    "gpt-4o-2024-05-13": (128_000, True, False, True),
    "gpt-4o-mini*": (128_000, True, True, True),
    "gpt-4.1*": (1_047_576, True, True, True),
    "gpt-4.1-mini*": (1_047_576, True, True, True),
    "gpt-4.1-nano*": (1_047_576, True, True, True),
    "o3*": (200_000, True, True, True),
    "o3-mini*": (200_000, True, True, False),
    "o4-mini*": (200_000, True, True, True),
    "gpt-4-turbo*": (128_000, True, False, True),
    "gpt-3.5-turbo*": (16_385, True, False, False),
    "text-embedding-3-small": (8_191, False, False, False),
    "text-embedding-3-large": (8_191, False, False, False),
    "text-embedding-ada-002": (8_191, False, False, False),
    # Anthropic
    "claude-3-5-sonnet*": (200_000, True, False, True),
    "claude-3-7-sonnet*": (200_000, True, False, True),
    "claude-sonnet-4*": (200_000, True, False, True),
    "claude-3-5-haiku*": (200_000, True, False, False),
    "claude-3-haiku*": (200_000, True, False, True),
    "claude-opus-4*": (200_000, True, False, True),
    "claude-3-opus*": (200_000, True, False, True),
    # Google
    "gemini-1.5-pro*": (2_097_152, True, True, True),
    "gemini-1.5-flash*": (1_048_576, True, True, True),
    "gemini-2.0-flash*": (1_048_576, True, True, True),
    "gemini-2.0-flash-lite*": (1_048_576, True, True, True),
    "gemini-2.5-pro*": (1_048_576, True, True, True),
    "gemini-2.5-flash*": (1_048_576, True, True, True),
    "gemini-2.5-flash-lite*": (1_048_576, True, True, True),
    # Mistral
    "mistral-large*": (131_072, True, True, False),
    "mistral-small*": (32_768, True, True, False),
    # Meta Llama 3.1 (Together AI)
    "*llama-3.1-8b*": (131_072, True, False, False),
    "*llama-3.1-70b*": (131_072, True, False, False),
    "*llama-3.1-405b*": (131_072, True, False, False),
}


def add_capabilities(apps, schema_editor):
    ModelPrice = apps.get_model("analytics", "ModelPrice")
    for model, (window, tools, schema, images) in CAPABILITIES.items():
        ModelPrice.objects.filter(model=model).update(
            context_window=window, supports_tools=tools, supports_json_schema=schema,
            supports_images=images)


def remove_capabilities(apps, schema_editor):
    ModelPrice = apps.get_model("analytics", "ModelPrice")
    ModelPrice.objects.filter(model__in=list(CAPABILITIES)).update(
        context_window=None, supports_tools=False, supports_json_schema=False,
        supports_images=False)


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0008_routing_and_feedback"),
    ]

    operations = [
        migrations.RunPython(add_capabilities, remove_capabilities),
    ]
