import uuid

from django import forms
from django.contrib.auth import get_user_model


class CreditGrantForm(forms.Form):
    """Staff: give (or, negative, take back) credits. The token makes a double submission post once."""

    username = forms.CharField(max_length=150)
    amount = forms.DecimalField(
        label="Amount (USD)", max_digits=18, decimal_places=8, help_text="Negative to correct a balance downwards."
    )
    note = forms.CharField(max_length=500, required=False)
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["token"] = uuid.uuid4().hex

    def clean_username(self):
        User = get_user_model()
        username = self.cleaned_data["username"].strip()
        try:
            return User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise forms.ValidationError(f"No user named '{username}'.") from None

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("Enter an amount other than zero.")
        return amount
