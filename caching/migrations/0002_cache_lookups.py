import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("caching", "0001_initial"),
        ("organizations", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="CacheLookups",
            fields=[
                ("organization", models.OneToOneField(
                    on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                    related_name="cache_lookups", serialize=False,
                    to="organizations.organization")),
                ("hits", models.PositiveBigIntegerField(default=0)),
                ("misses", models.PositiveBigIntegerField(default=0)),
            ],
            options={
                "verbose_name_plural": "cache lookups",
            },
        ),
    ]
