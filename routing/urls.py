from django.urls import path

from routing import policy_views, views

urlpatterns = [
    path("routes", views.RoutesApi.as_view(), name="routes"),
    path("routes/<int:route_id>", views.RouteApi.as_view(), name="route"),
    path("routing/policy", policy_views.RoutingPolicyApi.as_view(), name="routing-policy"),
]
