from django.apps import AppConfig


class CachingConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'caching'
