from django.apps import AppConfig


class PipelineConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "pipeline"

    def ready(self) -> None:
        from celery.signals import task_success

        from pipeline.metrics import count_written

        task_success.connect(count_written)
