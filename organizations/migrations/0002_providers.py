"""Many providers per organization: today's one ProviderCredential of each organization
becomes its default provider, named "default", with the same encrypted key (the token
is copied as it is: nothing is decrypted)."""

import django.db.models.deletion
from django.db import migrations, models


def credentials_to_providers(apps, schema_editor):
    alias = schema_editor.connection.alias
    ProviderCredential = apps.get_model("organizations", "ProviderCredential")
    Provider = apps.get_model("organizations", "Provider")
    for credential in ProviderCredential.objects.using(alias).order_by("pk"):
        provider = Provider.objects.using(alias).create(
            organization_id=credential.organization_id,
            name="default",
            kind=credential.kind,
            base_url=credential.base_url,
            api_key_encrypted=credential.api_key_encrypted,
            api_key_last4=credential.api_key_last4,
            enabled=True,
            is_default=True,
        )
        # auto_now set both on create: keep when the credential was last changed.
        Provider.objects.using(alias).filter(pk=provider.pk).update(
            created_at=credential.updated_at, updated_at=credential.updated_at)


def providers_to_credentials(apps, schema_editor):
    """Back to one credential per organization: its default provider (the others have
    nowhere to go in the old schema)."""
    alias = schema_editor.connection.alias
    ProviderCredential = apps.get_model("organizations", "ProviderCredential")
    Provider = apps.get_model("organizations", "Provider")
    for provider in Provider.objects.using(alias).filter(is_default=True).order_by("pk"):
        ProviderCredential.objects.using(alias).create(
            organization_id=provider.organization_id,
            kind=provider.kind,
            base_url=provider.base_url,
            api_key_encrypted=provider.api_key_encrypted,
            api_key_last4=provider.api_key_last4,
        )


class Migration(migrations.Migration):

    dependencies = [
        ("organizations", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Provider",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=64)),
                ("kind", models.CharField(choices=[("openai", "OpenAI or OpenAI-compatible"), ("azure", "Azure OpenAI"), ("anthropic", "Anthropic")], default="openai", max_length=20)),
                ("base_url", models.URLField(max_length=500)),
                ("api_key_encrypted", models.TextField()),
                ("api_key_last4", models.CharField(blank=True, max_length=4)),
                ("api_version", models.CharField(blank=True, max_length=40)),
                ("enabled", models.BooleanField(default=True)),
                ("is_default", models.BooleanField(default=False)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("organization", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="providers", to="organizations.organization")),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("organization", "name"), name="provider_name_unique_per_org"),
                    models.UniqueConstraint(condition=models.Q(("is_default", True)), fields=("organization",), name="one_default_provider_per_org"),
                ],
            },
        ),
        migrations.RunPython(credentials_to_providers, providers_to_credentials),
        migrations.DeleteModel(
            name="ProviderCredential",
        ),
    ]
