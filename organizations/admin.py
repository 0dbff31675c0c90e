from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from organizations import services
from organizations.models import ApiKey, Membership, Organization, Provider
from organizations.urlcheck import validate_upstream_base_url


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "cache_ttl_seconds", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role"]
    autocomplete_fields = ["user", "organization"]


class _HiddenFromRepr(str):
    """Renders as itself but not in repr(): when a template variable is missing, Django
    logs (DEBUG) a message holding repr() of the whole context."""

    def __repr__(self) -> str:
        return "'<redacted>'"


class ApiKeyCreateForm(forms.ModelForm):
    expires_in_days = forms.IntegerField(required=False, min_value=1)

    class Meta:
        model = ApiKey
        fields = ["organization", "name"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "organization", "created_at", "last_used_at",
                    "expires_at", "revoked_at"]
    list_filter = ["organization"]
    search_fields = ["prefix", "name", "organization__name"]
    actions = ["revoke"]
    readonly_fields = ["prefix", "organization", "created_by", "created_at", "last_used_at",
                       "expires_at", "revoked_at"]
    fields = ["name", "prefix", "organization", "created_by", "created_at", "last_used_at",
              "expires_at", "revoked_at"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
            kwargs["fields"] = ["organization", "name", "expires_in_days"]
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["organization", "name", "expires_in_days"] if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        days = form.cleaned_data.get("expires_in_days")
        created = services.api_key_create(
            organization=form.cleaned_data["organization"],
            name=form.cleaned_data["name"],
            created_by=request.user,
            expires_in=timedelta(days=days) if days else None,
        )
        # The admin logs the addition and builds the "created" page from `obj` itself,
        # so `obj` must become the saved key (pk, prefix, expiry), not be swapped out.
        obj.pk = created.api_key.pk
        obj.refresh_from_db()
        # Handed to response_add only through this request: the raw key is never stored,
        # not even in a session message.
        request.cognitude_raw_key = _HiddenFromRepr(created.raw_key)

    def save_related(self, request, form, formsets, change):
        """An ApiKey has no related objects to save; the model form's m2m is empty."""

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue=None
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "api_key": obj,
            "raw_key": request.cognitude_raw_key,
            "opts": self.model._meta,
            "title": "API key created",
        }
        return TemplateResponse(request, "admin/organizations/apikey/created.html", context)

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            services.api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(assume_scheme="https", max_length=500)
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the stored key.",
    )

    class Meta:
        model = Provider
        fields = ["organization", "kind", "base_url"]

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("api_key"):
            self.add_error("api_key", "A new provider credential needs an API key.")
        if cleaned.get("base_url"):
            try:
                validate_upstream_base_url(
                    cleaned["base_url"],
                    allow_private=settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS,
                )
            except ValidationError as exc:
                self.add_error("base_url", exc)
        return cleaned


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["organization", "kind", "base_url", "key_hint", "updated_at"]
    fields = ["organization", "kind", "base_url", "api_key", "key_hint"]
    readonly_fields = ["key_hint"]

    def get_readonly_fields(self, request, obj=None):
        # provider_credential_set keys on the organization: "moving" a credential would
        # really create or overwrite another organization's one.
        return ["organization", "key_hint"] if obj else ["key_hint"]

    @admin.display(description="API key")
    def key_hint(self, obj: Provider) -> str:
        return f"…{obj.api_key_last4}" if obj.pk else ""

    def save_model(self, request, obj: Provider, form, change: bool) -> None:
        saved = services.provider_credential_set(
            organization=obj.organization,
            kind=obj.kind,
            base_url=obj.base_url,
            api_key=form.cleaned_data.get("api_key") or None,
        )
        obj.pk = saved.pk
