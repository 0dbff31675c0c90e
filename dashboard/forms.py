from django import forms

from organizations.models import ApiKey, Provider
from routing.models import ModelRoute
from routing.table import RETRY_ON

EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"),
                  ("90", "In 90 days"), ("365", "In a year")]


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False,
                           help_text="What uses this key, e.g. “checkout service”.")
    expires_in_days = forms.TypedChoiceField(
        label="Expires", choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False
    )
    scope = forms.ChoiceField(choices=ApiKey.Scope.choices, initial=ApiKey.Scope.PROXY,
                              required=False)

    def clean_scope(self) -> str:
        # A form from before scopes existed (an open tab) still makes the usual key.
        return self.cleaned_data.get("scope") or ApiKey.Scope.PROXY


class ProviderForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="How routes name it, e.g. openai or "
                                                    "azure-east.")
    kind = forms.ChoiceField(choices=Provider.Kind.choices)
    base_url = forms.URLField(label="Base URL", assume_scheme="https", max_length=500,
                              help_text="e.g. https://api.openai.com/v1, "
                                        "https://NAME.openai.azure.com, "
                                        "https://api.anthropic.com")
    api_version = forms.CharField(label="API version", max_length=40, required=False,
                                  help_text="Azure OpenAI only, e.g. 2024-10-21.")
    api_key = forms.CharField(
        label="API key", required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only: it is encrypted and never shown again. "
                  "Leave empty to keep the stored key.",
    )
    enabled = forms.BooleanField(required=False, initial=True)
    is_default = forms.BooleanField(
        label="Default", required=False,
        help_text="Receives every model that has no route of its own.")

    def __init__(self, *args, has_stored_key: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.has_stored_key = has_stored_key

    def clean_api_key(self) -> str | None:
        api_key = self.cleaned_data.get("api_key") or None
        if api_key is None and not self.has_stored_key:
            raise forms.ValidationError("A new provider needs an API key.")
        return api_key


class RouteForm(forms.Form):
    name = forms.CharField(max_length=200, label="Model name",
                           help_text="What clients ask for: a real model (gpt-4o-mini) or "
                                     "an alias (fast).")
    strategy = forms.ChoiceField(choices=ModelRoute.Strategy.choices)
    targets = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="One per line, first tried first: PROVIDER:MODEL[:WEIGHT], @ROUTE for an "
                  "alias of another route, # in front to disable.")
    retry_on = forms.MultipleChoiceField(
        label="Fall back on", choices=[(kind, kind) for kind in sorted(RETRY_ON)],
        required=False, initial=sorted(RETRY_ON), widget=forms.CheckboxSelectMultiple)

    def target_lines(self) -> list[str]:
        return [line for line in self.cleaned_data["targets"].splitlines() if line.strip()]


class CacheClearForm(forms.Form):
    tier = forms.ChoiceField(choices=[("all", "Both tiers (Redis and PostgreSQL)"),
                                      ("redis", "Hot tier only (Redis)")])
