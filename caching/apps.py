from django.apps import AppConfig


class CachingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "caching"

    def ready(self) -> None:
        from caching.events import CacheEntryEvent
        from pipeline.registry import register

        register(CacheEntryEvent, task="caching.tasks.cache_entries_store")
