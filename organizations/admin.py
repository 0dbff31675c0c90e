from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from organizations import services
from organizations.models import ApiKey, AuditEntry, Membership, Organization, Provider


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
        fields = ["organization", "name", "scope"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "organization", "scope", "created_at", "last_used_at",
                    "expires_at", "revoked_at"]
    list_filter = ["scope", "organization"]
    search_fields = ["prefix", "name", "organization__name"]
    actions = ["revoke"]
    readonly_fields = ["prefix", "organization", "scope", "created_by", "created_at",
                       "last_used_at", "expires_at", "revoked_at"]
    fields = ["name", "prefix", "organization", "scope", "created_by", "created_at",
              "last_used_at", "expires_at", "revoked_at"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
            kwargs["fields"] = ["organization", "name", "scope", "expires_in_days"]
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["organization", "name", "scope", "expires_in_days"] if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            services.api_key_update(api_key=ApiKey.objects.get(pk=obj.pk), name=obj.name,
                                    actor=services.Actor.of_user(request.user))
            return
        days = form.cleaned_data.get("expires_in_days")
        created = services.api_key_create(
            organization=form.cleaned_data["organization"],
            name=form.cleaned_data["name"],
            scope=form.cleaned_data["scope"],
            created_by=request.user,
            expires_in=timedelta(days=days) if days else None,
            actor=services.Actor.of_user(request.user),
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
            services.api_key_revoke(api_key=api_key, actor=services.Actor.of_user(request.user))
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(assume_scheme="https", max_length=500)
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the stored key.",
    )
    # Not the model's is_default: making this provider the default moves the default,
    # which the one-default constraint would refuse before the service could move it.
    make_default = forms.BooleanField(
        required=False, label="Default",
        help_text="Receives every model that has no route; the first provider of an "
                  "organization is its default anyway.")

    class Meta:
        model = Provider
        fields = ["organization", "name", "kind", "base_url", "api_version", "enabled"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial.setdefault("make_default", self.instance.is_default)

    def clean(self):
        cleaned = super().clean()
        organization = cleaned.get("organization") or getattr(self.instance, "organization",
                                                                None)
        if organization is None or self.errors:
            return cleaned
        try:
            services.provider_validate(
                organization=organization, name=cleaned.get("name", ""),
                kind=cleaned.get("kind", ""), base_url=cleaned.get("base_url", ""),
                api_version=cleaned.get("api_version", ""),
                api_key=cleaned.get("api_key") or None,
                provider=self.instance if self.instance.pk else None,
            )
        except ValidationError as exc:
            self.add_error(None, exc)
        return cleaned


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "organization", "kind", "base_url", "key_hint", "enabled",
                    "is_default", "updated_at"]
    list_filter = ["kind", "enabled", "is_default"]
    search_fields = ["name", "organization__name", "organization__slug", "base_url"]
    fields = ["organization", "name", "kind", "base_url", "api_version", "api_key",
              "key_hint", "enabled", "make_default"]
    readonly_fields = ["key_hint"]

    def get_readonly_fields(self, request, obj=None):
        # A provider belongs to its organization: "moving" one would hand its key and
        # its routes' traffic to another tenant.
        return ["organization", "key_hint"] if obj else ["key_hint"]

    def delete_model(self, request: HttpRequest, obj: Provider) -> None:
        services.provider_delete(provider=obj, actor=services.Actor.of_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            self.delete_model(request, provider)

    @admin.display(description="API key")
    def key_hint(self, obj: Provider) -> str:
        return f"…{obj.api_key_last4}" if obj.pk else ""

    def save_model(self, request, obj: Provider, form, change: bool) -> None:
        data = form.cleaned_data
        fields = {"name": data["name"], "kind": data["kind"], "base_url": data["base_url"],
                  "api_version": data["api_version"], "enabled": data["enabled"],
                  "is_default": data["make_default"]}
        actor = services.Actor.of_user(request.user)
        if change:
            saved = services.provider_update(provider=Provider.objects.get(pk=obj.pk),
                                             api_key=data.get("api_key") or None,
                                             actor=actor, **fields)
        else:
            saved = services.provider_add(organization=data["organization"],
                                          api_key=data["api_key"], actor=actor, **fields)
        # The admin logs and redirects with `obj`: it must become the saved row.
        obj.pk = saved.pk
        obj.refresh_from_db()


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: a trail that can be edited is no trail."""

    list_display = ["created_at", "organization", "actor_label", "action", "object_label"]
    list_filter = ["action", "organization"]
    search_fields = ["actor_label", "action", "object_label", "organization__slug"]
    date_hierarchy = "created_at"
    list_select_related = ["organization"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
