from django.urls import path

from routing import views

urlpatterns = [
    path("routes", views.RoutesApi.as_view(), name="routes"),
    path("routes/<int:route_id>", views.RouteApi.as_view(), name="route"),
]
