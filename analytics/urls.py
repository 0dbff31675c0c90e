from django.urls import path

from analytics import views

urlpatterns = [
    path("analytics/summary", views.SummaryApi.as_view(), name="analytics-summary"),
    path("analytics/timeseries", views.TimeseriesApi.as_view(), name="analytics-timeseries"),
    path("analytics/breakdown", views.BreakdownApi.as_view(), name="analytics-breakdown"),
    path("recommendations", views.RecommendationsApi.as_view(), name="recommendations"),
]
