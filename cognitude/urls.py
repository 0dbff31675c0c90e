from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from analytics.metrics import metrics_view
from cognitude.error_views import json_methods
from cognitude.health import health
from cognitude.logins import (
    ThrottledAdminAuthenticationForm,
    ThrottledAuthenticationForm,
    ThrottledPasswordChangeView,
)

# Admin's sign-in behind the same throttle as the dashboard's.
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("health", json_methods("GET", "HEAD")(health), name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(
        redirect_authenticated_user=True, authentication_form=ThrottledAuthenticationForm),
         name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("accounts/password/",
         ThrottledPasswordChangeView.as_view(
             template_name="registration/change_password.html"),
         name="password_change"),
    path("accounts/password/done/",
         auth_views.PasswordChangeDoneView.as_view(
             template_name="registration/change_password_done.html"),
         name="password_change_done"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/", include("analytics.urls")),
    path("api/", include("organizations.urls")),
    path("api/", include("routing.urls")),
    path("api/", include("ratelimit.urls")),
    path("api/", include("alerts.urls")),
    path("", include("caching.urls")),
    path("", include("dashboard.urls")),
]

# Django's own 400, 404 and 500 in the error shape on the JSON endpoints.
handler400 = "cognitude.error_views.bad_request"
handler404 = "cognitude.error_views.page_not_found"
handler500 = "cognitude.error_views.server_error"
