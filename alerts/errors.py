"""The alerts' domain errors; the views and commands translate them at the edge."""


class AlertRuleNotFound(Exception):
    """No such rule in this organization."""


class AlertChannelNotFound(Exception):
    """No such channel in this organization."""
