import hashlib

from django.db import migrations, models


def digests_fill(apps, schema_editor):
    DeadLetter = apps.get_model("pipeline", "DeadLetter")
    for letter in DeadLetter.objects.all():
        letter.digest = hashlib.sha256(bytes(letter.event)).hexdigest()
        letter.save(update_fields=["digest"])


class Migration(migrations.Migration):

    dependencies = [
        ("pipeline", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="deadletter",
            name="digest",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.RunPython(digests_fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="deadletter",
            name="digest",
            field=models.CharField(max_length=64, unique=True),
        ),
    ]
