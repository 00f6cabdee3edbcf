from django import forms


class JoinTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Something to recognise it by, e.g. “rack 3” or “lab 4090”.")
