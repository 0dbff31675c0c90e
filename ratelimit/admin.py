"""Limits, budgets and policies in the admin, saved through the services so that every
change is audited like any other; the audit and the crossings are read-only."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from ratelimit.models import Budget, BudgetCrossing, Limit, LimitChange, LimitPolicy
from ratelimit.services import (
    LIMIT_FIELDS,
    Actor,
    budget_delete,
    budget_set,
    limit_delete,
    limit_policy_set,
    limit_set,
)


class _ScopeForm(forms.ModelForm):
    def clean(self) -> dict:
        data = super().clean()
        organization, api_key = data.get("organization"), data.get("api_key")
        if organization and api_key and api_key.organization_id != organization.pk:
            raise ValidationError({"api_key": "That key belongs to another organization."})
        return data


class _LimitForm(_ScopeForm):
    def clean(self) -> dict:
        data = super().clean()
        if not any(data.get(name) for name in LIMIT_FIELDS):
            raise ValidationError("Set at least one limit (or delete the row).")
        return data


class _Audited(admin.ModelAdmin):
    """Saves and deletes go through the app's services (audited as the admin user); the
    scope of a saved row is fixed (delete it and add another)."""

    scope_fields: tuple[str, ...] = ("organization", "api_key")
    form = _ScopeForm

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.scope_fields if obj is not None else ()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(Limit)
class LimitAdmin(_Audited):
    form = _LimitForm
    list_display = ["organization", "api_key", "model", *LIMIT_FIELDS, "updated_at"]
    list_filter = ["organization"]
    search_fields = ["organization__name", "api_key__prefix", "model"]
    autocomplete_fields = ["organization", "api_key"]
    scope_fields = ("organization", "api_key", "model")

    def save_model(self, request, obj: Limit, form, change) -> None:
        saved = limit_set(organization=obj.organization, api_key=obj.api_key, model=obj.model,
                          values={name: getattr(obj, name) for name in LIMIT_FIELDS},
                          actor=Actor.of_user(request.user))
        if saved is not None:
            obj.pk = saved.pk

    def delete_model(self, request, obj: Limit) -> None:
        limit_delete(limit=obj, actor=Actor.of_user(request.user))


@admin.register(Budget)
class BudgetAdmin(_Audited):
    list_display = ["organization", "api_key", "period", "limit_usd", "soft", "updated_at"]
    list_filter = ["period", "soft", "organization"]
    search_fields = ["organization__name", "api_key__prefix"]
    autocomplete_fields = ["organization", "api_key"]
    scope_fields = ("organization", "api_key", "period")

    def save_model(self, request, obj: Budget, form, change) -> None:
        saved = budget_set(organization=obj.organization, api_key=obj.api_key,
                           period=obj.period, limit_usd=obj.limit_usd, soft=obj.soft,
                           actor=Actor.of_user(request.user))
        obj.pk = saved.pk

    def delete_model(self, request, obj: Budget) -> None:
        budget_delete(budget=obj, actor=Actor.of_user(request.user))


@admin.register(LimitPolicy)
class LimitPolicyAdmin(_Audited):
    list_display = ["organization", "fail_closed", "updated_at"]
    list_filter = ["fail_closed"]
    autocomplete_fields = ["organization"]
    scope_fields = ("organization",)

    def save_model(self, request, obj: LimitPolicy, form, change) -> None:
        saved = limit_policy_set(organization=obj.organization, fail_closed=obj.fail_closed,
                                 actor=Actor.of_user(request.user))
        obj.pk = saved.pk

    def delete_model(self, request, obj: LimitPolicy) -> None:
        # Deleting the policy is going back to the default: fail open.
        limit_policy_set(organization=obj.organization, fail_closed=False,
                         actor=Actor.of_user(request.user))
        obj.delete()


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(LimitChange)
class LimitChangeAdmin(_ReadOnly):
    list_display = ["at", "organization", "actor_label", "target", "subject", "old", "new"]
    list_filter = ["target", "organization"]
    search_fields = ["organization__name", "actor_label", "subject"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the audit is not editable


@admin.register(BudgetCrossing)
class BudgetCrossingAdmin(_ReadOnly):
    list_display = ["at", "organization", "api_key", "period", "period_start", "limit_usd",
                    "spend_usd", "soft"]
    list_filter = ["period", "soft", "organization"]
