"""The default rules for the organizations that existed before alerts (new ones get
them when they are created: alerts.defaults)."""

from django.db import migrations


def create_defaults(apps, schema_editor):
    from alerts.defaults import default_rules_create

    rule_model = apps.get_model("alerts", "AlertRule")
    for org_id in apps.get_model("organizations", "Organization").objects.values_list(
            "pk", flat=True):
        default_rules_create(organization_id=org_id, rule_model=rule_model)


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0002_alertevent_delivery"),
    ]

    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
