from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("organizations", "0002_providers"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="scope",
            field=models.CharField(choices=[("proxy", "Proxy (gateway and analytics)"), ("admin", "Admin (also manages providers, routes and keys)")], default="proxy", max_length=10),
        ),
    ]
