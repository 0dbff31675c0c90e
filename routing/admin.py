from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from organizations.models import Provider
from organizations.services import Actor
from routing import complexity
from routing.errors import RouteInUse, RoutingPolicyInvalid
from routing.models import ModelRoute, RouteTarget, RoutingPolicy
from routing.policies import routing_policy_set, routing_policy_validate
from routing.services import TargetSpec, route_delete, route_set, route_update, route_validate
from routing.table import RETRY_ON


class ModelRouteForm(forms.ModelForm):
    retry_on = forms.MultipleChoiceField(
        choices=[(kind, kind) for kind in sorted(RETRY_ON)], required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The failures that move a request to the next target.")

    class Meta:
        model = ModelRoute
        fields = ["organization", "name", "strategy", "retry_on"]


class RouteTargetFormSet(forms.BaseInlineFormSet):
    """Checks the route as a whole, with routing.services' rules (the route's own
    fields come from the form above, already on `self.instance`)."""

    def target_specs(self) -> list[TargetSpec]:
        return [
            TargetSpec(provider=form.cleaned_data.get("provider"),
                       upstream_model=form.cleaned_data["upstream_model"],
                       weight=form.cleaned_data["weight"],
                       priority=form.cleaned_data["priority"],
                       enabled=form.cleaned_data["enabled"])
            for form in self.forms
            if form.has_changed() or form.instance.pk
            if not self._should_delete_form(form)
        ]

    def clean(self) -> None:
        super().clean()
        route = self.instance
        if any(self.errors) or route.organization_id is None or not route.name:
            return
        saved = ModelRoute.objects.filter(pk=route.pk).first() if route.pk else None
        try:
            route_validate(organization=route.organization, name=route.name,
                           targets=self.target_specs(), strategy=route.strategy,
                           retry_on=route.retry_on, route=saved)
        except RouteInUse as exc:
            raise ValidationError(str(exc)) from None


class RouteTargetInline(admin.TabularInline):
    model = RouteTarget
    formset = RouteTargetFormSet
    fields = ["provider", "upstream_model", "weight", "priority", "enabled"]
    extra = 1

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        provider = formset.form.base_fields["provider"]
        provider.help_text = "Empty for an alias: the upstream model names another route."
        if obj is not None:
            provider.queryset = Provider.objects.filter(organization=obj.organization)
        return formset


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    """Routes are written with their targets by routing.services (which validated them
    in the inline's formset), never row by row."""

    form = ModelRouteForm
    inlines = [RouteTargetInline]
    list_display = ["name", "organization", "strategy", "target_list", "updated_at"]
    list_filter = ["strategy"]
    search_fields = ["name", "organization__name", "organization__slug"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("targets__provider")

    def get_readonly_fields(self, request, obj=None):
        # A route's targets are its organization's providers: it cannot change hands.
        return ["organization"] if obj else []

    def delete_model(self, request, obj: ModelRoute) -> None:
        route_delete(route=obj, actor=Actor.of_user(request.user))

    def delete_queryset(self, request, queryset) -> None:
        for route in queryset:
            self.delete_model(request, route)

    @admin.display(description="Targets")
    def target_list(self, obj: ModelRoute) -> str:
        return ", ".join(str(target) for target in obj.targets.all())

    def save_model(self, request, obj: ModelRoute, form, change: bool) -> None:
        """Saved in save_related, with the targets."""

    def save_related(self, request, form, formsets, change: bool) -> None:
        [targets] = formsets
        route = form.instance
        fields = {"name": route.name, "strategy": route.strategy,
                  "retry_on": route.retry_on, "targets": targets.target_specs()}
        if change:
            saved = route_update(route=ModelRoute.objects.get(pk=route.pk),
                                 actor=Actor.of_user(request.user), **fields)
        else:
            saved, _ = route_set(organization=route.organization,
                                 actor=Actor.of_user(request.user), **fields)
        route.pk = saved.pk
        route.refresh_from_db()
        # What the admin's change message reads from a formset that saved itself.
        targets.new_objects, targets.changed_objects, targets.deleted_objects = [], [], []


class RoutingPolicyForm(forms.ModelForm):
    """Checked with routing.policies' rules; written by routing_policy_set."""

    apply_to = forms.CharField(required=False, help_text="Models routed too, comma-separated "
                               "(auto always is).")

    class Meta:
        model = RoutingPolicy
        fields = ["organization", "mode", "simple_model", "standard_model", "complex_model",
                  "simple_below", "complex_from", "apply_to"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["apply_to"] = ", ".join(self.instance.apply_to)
        else:
            self.initial.setdefault("simple_below", complexity.SIMPLE_BELOW)
            self.initial.setdefault("complex_from", complexity.COMPLEX_FROM)

    def clean_apply_to(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["apply_to"].split(",")
                if name.strip()]

    def clean(self) -> dict:
        data = super().clean()
        organization = data.get("organization") or self.instance.organization
        if organization is None or self.errors:
            return data
        try:
            routing_policy_validate(
                organization=organization, mode=data["mode"],
                models=[data["simple_model"], data["standard_model"], data["complex_model"]],
                simple_below=data["simple_below"], complex_from=data["complex_from"],
                apply_to=data["apply_to"])
        except RoutingPolicyInvalid as exc:
            field = exc.param if exc.param in self.fields else None
            self.add_error(field, str(exc))
        return data


@admin.register(RoutingPolicy)
class RoutingPolicyAdmin(admin.ModelAdmin):
    form = RoutingPolicyForm
    list_display = ["organization", "mode", "simple_model", "standard_model",
                    "complex_model", "simple_below", "complex_from", "generation",
                    "updated_at"]
    list_filter = ["mode"]
    search_fields = ["organization__name", "organization__slug"]
    readonly_fields = ["generation", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return ["organization", *self.readonly_fields] if obj else self.readonly_fields

    def save_model(self, request, obj: RoutingPolicy, form, change: bool) -> None:
        fields = {name: form.cleaned_data[name] for name in RoutingPolicyForm.Meta.fields
                  if name != "organization"}
        saved, _ = routing_policy_set(organization=obj.organization,
                                      actor=Actor.of_user(request.user), **fields)
        obj.pk = saved.pk
        obj.refresh_from_db()
