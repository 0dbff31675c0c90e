from django.urls import path

from analytics import views

urlpatterns = [
    path("analytics/summary", views.SummaryApi.as_view(), name="analytics-summary"),
    path("analytics/timeseries", views.TimeseriesApi.as_view(), name="analytics-timeseries"),
    path("analytics/breakdown", views.BreakdownApi.as_view(), name="analytics-breakdown"),
    path("analytics/routing", views.RoutingApi.as_view(), name="analytics-routing"),
    path("feedback", views.FeedbackApi.as_view(), name="feedback"),
    path("recommendations", views.RecommendationsApi.as_view(), name="recommendations"),
]
