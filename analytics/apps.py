from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "analytics"

    def ready(self) -> None:
        from analytics.events import RequestEvent
        from analytics.metrics import requests_observe
        from pipeline.registry import register

        register(RequestEvent, task="analytics.tasks.request_logs_store",
                 observe=requests_observe)
