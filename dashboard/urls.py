from django.urls import path

from dashboard import limits, routing, views

app_name = "dashboard"

urlpatterns = [
    path("", views.index, name="index"),
    path("orgs/<slug:slug>/", views.overview, name="overview"),
    path("orgs/<slug:slug>/top-recommendations/", views.top_recommendations,
         name="top-recommendations"),
    path("orgs/<slug:slug>/usage/", views.usage, name="usage"),
    path("orgs/<slug:slug>/usage.csv", views.usage_csv, name="usage-csv"),
    path("orgs/<slug:slug>/cache/", views.cache, name="cache"),
    path("orgs/<slug:slug>/cache/clear/", views.cache_clear_view, name="cache-clear"),
    path("orgs/<slug:slug>/keys/", views.keys, name="keys"),
    path("orgs/<slug:slug>/keys/new/", views.key_create, name="key-create"),
    path("orgs/<slug:slug>/keys/<int:key_id>/revoke/", views.key_revoke, name="key-revoke"),
    path("orgs/<slug:slug>/providers/", views.providers, name="providers"),
    path("orgs/<slug:slug>/providers/<int:provider_id>/", views.provider_edit,
         name="provider"),
    path("orgs/<slug:slug>/providers/<int:provider_id>/delete/", views.provider_remove,
         name="provider-delete"),
    path("orgs/<slug:slug>/routes/", views.routes, name="routes"),
    path("orgs/<slug:slug>/routes/<int:route_id>/", views.route_edit, name="route"),
    path("orgs/<slug:slug>/routes/<int:route_id>/delete/", views.route_remove,
         name="route-delete"),
    path("orgs/<slug:slug>/routing/", routing.routing, name="routing"),
    path("orgs/<slug:slug>/routing/policy/", routing.routing_policy_save,
         name="routing-policy"),
    path("orgs/<slug:slug>/recommendations/", views.recommendations,
         name="recommendations"),
    path("orgs/<slug:slug>/limits/", limits.limits, name="limits"),
    path("orgs/<slug:slug>/limits/set/", limits.limit_save, name="limit-save"),
    path("orgs/<slug:slug>/limits/<int:limit_id>/delete/", limits.limit_remove,
         name="limit-delete"),
    path("orgs/<slug:slug>/limits/policy/", limits.policy_save, name="limits-policy"),
    path("orgs/<slug:slug>/budgets/set/", limits.budget_save, name="budget-save"),
    path("orgs/<slug:slug>/budgets/<int:budget_id>/delete/", limits.budget_remove,
         name="budget-delete"),
]
