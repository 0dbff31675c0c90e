from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from organizations.models import Provider
from organizations.services import Actor
from routing.errors import RouteInUse
from routing.models import ModelRoute, RouteTarget
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
