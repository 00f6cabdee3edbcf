"""Forms of the self-service account pages (sign-up, verification) and the staff Users pages."""

import uuid

from django import forms
from django.core.exceptions import ValidationError

from accounts import users


class SignupForm(forms.Form):
    email = forms.EmailField(
        max_length=150, widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True})
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters, not a common password, not all digits and not like your email address.",
    )
    password2 = forms.CharField(
        label="Password again", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )

    def clean(self):
        cleaned = super().clean()
        email, password1, password2 = cleaned.get("email"), cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", "The two passwords differ.")
        elif email and password1:
            try:
                users.signup_password_check(email=email, password=password1)
            except ValidationError as error:
                self.add_error("password1", error)
        return cleaned


class EmailForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))


class UserSearchForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=200)


class StaffUserForm(forms.Form):
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(max_length=254)
    is_staff = forms.BooleanField(
        label="Staff (an operator: sees the fleet, deployments, models, join tokens and users)", required=False
    )


class StaffCreditForm(forms.Form):
    """Give (or, negative, take back) credits. The token makes a double submission post once."""

    amount = forms.DecimalField(
        label="Amount (USD)", max_digits=18, decimal_places=8, help_text="Negative to correct a balance downwards."
    )
    note = forms.CharField(max_length=500, required=False)
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["token"] = uuid.uuid4().hex

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("Enter an amount other than zero.")
        return amount
