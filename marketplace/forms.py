from django import forms

from marketplace.models import HostProfile

MAX_TOKEN_DAYS = 365
MAX_TOKEN_USES = 1000


class HostProfileForm(forms.ModelForm):
    class Meta:
        model = HostProfile
        fields = ["display_name", "payout_details"]
        widgets = {"payout_details": forms.Textarea(attrs={"rows": 3})}
        help_texts = {"display_name": "How customers and operators see you."}


class HostJoinTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Something to recognise it by, e.g. “home 4090”.")
    expires_in_days = forms.IntegerField(label="Expires after (days)", min_value=1, max_value=MAX_TOKEN_DAYS, initial=7)
    max_uses = forms.IntegerField(
        label="Machines it may join",
        min_value=1,
        max_value=MAX_TOKEN_USES,
        initial=1,
        required=False,
        help_text="Empty for any number until it expires.",
    )


class PayoutRequestForm(forms.Form):
    amount = forms.DecimalField(
        label="Amount (USD)",
        max_digits=18,
        decimal_places=2,
        required=False,
        help_text="Empty for everything available.",
    )


class PayoutDecisionForm(forms.Form):
    action = forms.ChoiceField(choices=[("approve", "Approve"), ("paid", "Mark paid"), ("reject", "Reject")])
    reference = forms.CharField(max_length=200, required=False, help_text="The payment's reference (when paid).")
    note = forms.CharField(max_length=500, required=False)


class TrustedOnlyForm(forms.Form):
    trusted_only = forms.BooleanField(
        label="Run my requests on trusted nodes only",
        required=False,
        help_text="Every key of this account; a key can also ask for it on its own.",
    )
