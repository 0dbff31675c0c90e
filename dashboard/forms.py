from django import forms

from organizations.models import Provider

EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"),
                  ("90", "In 90 days"), ("365", "In a year")]


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False,
                           help_text="What uses this key, e.g. “checkout service”.")
    expires_in_days = forms.TypedChoiceField(
        label="Expires", choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False
    )


class ProviderForm(forms.Form):
    kind = forms.ChoiceField(choices=Provider.Kind.choices)
    base_url = forms.URLField(label="Base URL", assume_scheme="https", max_length=500,
                              help_text="e.g. https://api.openai.com/v1")
    api_key = forms.CharField(
        label="API key", required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only: it is encrypted and never shown again. "
                  "Leave empty to keep the stored key.",
    )

    def __init__(self, *args, has_stored_key: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.has_stored_key = has_stored_key

    def clean_api_key(self) -> str | None:
        api_key = self.cleaned_data.get("api_key") or None
        if api_key is None and not self.has_stored_key:
            raise forms.ValidationError("A new provider needs an API key.")
        return api_key


class CacheClearForm(forms.Form):
    tier = forms.ChoiceField(choices=[("all", "Both tiers (Redis and PostgreSQL)"),
                                      ("redis", "Hot tier only (Redis)")])
