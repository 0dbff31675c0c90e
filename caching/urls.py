from django.urls import path

from caching import views

urlpatterns = [
    path("cache/stats", views.stats, name="cache-stats"),
    path("cache", views.clear, name="cache-clear"),
]
