from django.apps import AppConfig


class AlertsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from alerts.defaults import organization_created
        from organizations.models import Organization
        from pipeline.registry import register
        from ratelimit.events import BudgetUsageEvent

        register(BudgetUsageEvent, task="alerts.tasks.budget_usage_evaluate")
        # Every organization gets the default rules however it was made (the service,
        # admin, a fixture): organizations cannot call alerts (alerts depends on it),
        # so alerts listens for the one moment it needs.
        post_save.connect(organization_created, sender=Organization,
                          dispatch_uid="alerts.default_rules")
