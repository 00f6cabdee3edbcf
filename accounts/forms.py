from django import forms
from django.conf import settings
from django.utils import timezone

from accounts.models import ApiKey
from deployments.models import CatalogModel


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    rpm = forms.IntegerField(
        label="Requests per minute", min_value=1, max_value=ApiKey.RPM_MAX, initial=settings.API_KEY_DEFAULT_RPM
    )
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[ApiKey.Scope.INFERENCE]
    )
    allowed_models = forms.MultipleChoiceField(
        label="Allowed models (optional)",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unchecked to allow every model.",
    )
    max_budget = forms.DecimalField(
        label="Budget in USD (optional)",
        required=False,
        min_value=0,
        max_digits=18,
        decimal_places=8,
        help_text="Requests are refused once the key has spent this much in the period.",
    )
    budget_period = forms.ChoiceField(
        label="Budget period", choices=ApiKey.BudgetPeriod.choices, initial=ApiKey.BudgetPeriod.MONTH, required=False
    )
    tpm = forms.IntegerField(
        label="Tokens per minute (optional)",
        required=False,
        min_value=1,
        max_value=ApiKey.TPM_MAX,
        help_text="Prompt plus max_tokens; empty for no limit.",
    )
    max_parallel = forms.IntegerField(
        label="Requests in flight (optional)",
        required=False,
        min_value=1,
        max_value=ApiKey.MAX_PARALLEL_MAX,
        help_text="Empty for no limit.",
    )
    trusted_only = forms.BooleanField(
        label="Trusted nodes only",
        required=False,
        help_text="Never run this key's requests on community (hosts') nodes.",
    )
    expires_at = forms.DateTimeField(
        label="Expires (optional)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Leave empty for a key that does not expire.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [
            (model_id, model_id) for model_id in CatalogModel.objects.values_list("model_id", flat=True)
        ]

    @property
    def limit_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("max_budget", "budget_period", "tpm", "max_parallel")]

    def clean_budget_period(self):
        return self.cleaned_data["budget_period"] or ApiKey.BudgetPeriod.MONTH

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("Choose a time in the future.")
        return expires_at


class UsageFilterForm(forms.Form):
    PERIODS = [("1", "Last 24 hours"), ("7", "Last 7 days"), ("30", "Last 30 days"), ("", "All time")]
    RESOLUTIONS = [("", "Automatic"), ("hour", "Hour"), ("day", "Day")]

    key = forms.ChoiceField(required=False)
    model = forms.ChoiceField(required=False)
    days = forms.ChoiceField(label="Period", choices=PERIODS, required=False, initial="7")
    per = forms.ChoiceField(label="Chart per", choices=RESOLUTIONS, required=False)

    def __init__(self, *args, keys=(), models=(), **kwargs):
        super().__init__(*args, **kwargs)
        # Keys by name; the prefix tells apart two keys of the same name.
        self.fields["key"].choices = [("", "All keys")] + [(k.prefix, f"{k.name} ({k.display_prefix}…)") for k in keys]
        self.fields["model"].choices = [("", "All models")] + [(m, m) for m in models]
