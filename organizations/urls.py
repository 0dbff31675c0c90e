from django.urls import path

from organizations import views

urlpatterns = [
    path("providers", views.ProvidersApi.as_view(), name="providers"),
    path("providers/<int:provider_id>", views.ProviderApi.as_view(), name="provider"),
    path("keys", views.ApiKeysApi.as_view(), name="keys"),
    path("keys/<int:key_id>", views.ApiKeyApi.as_view(), name="key"),
    path("audit", views.AuditApi.as_view(), name="audit"),
    path("keys/<int:key_id>/revoke", views.ApiKeyRevokeApi.as_view(), name="key-revoke"),
]
