"""An organization's model routes: the model name a client asks for, mapped to ordered,
weighted targets. Written through routing.services (which validates), read by the
request path as a snapshot (routing.selectors.routing_table_for_org)."""

from django.db import models

from routing.table import RETRY_ON


def default_retry_on() -> list[str]:
    return sorted(RETRY_ON)


class ModelRoute(models.Model):
    class Strategy(models.TextChoices):
        PRIORITY = "priority", "Priority (in order, next on failure)"
        WEIGHTED = "weighted", "Weighted (split by weight)"
        LATENCY = "latency", "Latency (fastest time to first byte)"

    organization = models.ForeignKey(
        "organizations.Organization", on_delete=models.CASCADE, related_name="routes"
    )
    # The model name a client asks for: a real model ("gpt-4o-mini") or an alias ("fast").
    name = models.CharField(max_length=200)
    strategy = models.CharField(max_length=10, choices=Strategy.choices,
                                default=Strategy.PRIORITY)
    # The failures that move a request to the next target: a subset of table.RETRY_ON.
    retry_on = models.JSONField(default=default_retry_on)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"],
                                    name="route_name_unique_per_org"),
        ]

    def __str__(self) -> str:
        return self.name


class RouteTarget(models.Model):
    """A provider and the model it is asked for; or, with no provider, an alias: then
    `upstream_model` names another route of the organization, whose targets stand in
    for this one when the snapshot is built."""

    route = models.ForeignKey(ModelRoute, on_delete=models.CASCADE, related_name="targets")
    # RESTRICT: a provider in use is not deleted from under its routes, yet goes with its
    # organization (which takes the routes along).
    provider = models.ForeignKey("organizations.Provider", null=True, blank=True,
                                 on_delete=models.RESTRICT, related_name="targets")
    upstream_model = models.CharField(max_length=200)
    weight = models.PositiveIntegerField(default=1)
    priority = models.PositiveIntegerField(default=0)  # lower first
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "pk"]

    def __str__(self) -> str:
        if self.provider_id is None:
            return f"alias of {self.upstream_model}"
        return f"{self.provider.name}:{self.upstream_model}"


class RoutingPolicy(models.Model):
    """Smart routing for one organization (routing.policy decides, per request): which
    model each tier of task complexity goes to, and where the tiers part.

    A tier names a model (`gpt-4o-mini`, in the price/model table) or a route of the
    organization written `@NAME`. Requests for `auto` are routed; so are requests for
    the models in `apply_to`, which may go down a tier but never up. Written only by
    routing.services.routing_policy_set, which validates it and bumps `generation`:
    the generation is part of a routed request's cache key, so no answer chosen by an
    older policy is served after a change.
    """

    class Mode(models.TextChoices):
        OFF = "off", "Off"
        SHADOW = "shadow", "Shadow (decide and record, send as asked)"
        ON = "on", "On"

    organization = models.OneToOneField("organizations.Organization",
                                        on_delete=models.CASCADE,
                                        related_name="routing_policy")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.OFF)
    simple_model = models.CharField(max_length=201)
    standard_model = models.CharField(max_length=201)
    complex_model = models.CharField(max_length=201)
    # A score below simple_below is simple; from complex_from on, complex.
    simple_below = models.FloatField()
    complex_from = models.FloatField()
    apply_to = models.JSONField(default=list, blank=True)
    generation = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "routing policies"

    def __str__(self) -> str:
        return f"{self.organization}: {self.mode}"
