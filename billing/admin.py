"""Admin: the ledger and balances are read-only; staff add credits through a grant form that
posts a ledger entry with billing.services (nothing edits or deletes an entry)."""

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model

from billing import services
from billing.models import BillingAccount, DynamicPrice, LedgerEntry, PriceVersion
from billing.selectors import balance_of


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class CreditForm(forms.ModelForm):
    """Add credits: a positive amount is a grant, a negative one an adjustment (refused below zero)."""

    account = forms.ModelChoiceField(queryset=get_user_model().objects.order_by("username"), label="User")

    class Meta:
        model = LedgerEntry
        fields = ["account", "amount", "note"]

    def clean(self):
        cleaned = super().clean()
        user, amount = cleaned.get("account"), cleaned.get("amount")
        if user is not None and amount is not None:
            if amount == 0:
                self.add_error("amount", "Enter an amount other than zero.")
            elif amount < 0 and balance_of(user) + amount < 0:
                self.add_error("amount", f"This would take the balance of {user} below zero ({balance_of(user)}).")
        return cleaned

    def _post_clean(self):
        pass  # the entry is posted by billing.services, not validated and saved as a model instance


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account", "kind", "amount", "balance_after", "reference", "api_key", "created_by"]
    list_filter = ["kind", "created_at"]
    search_fields = ["account__username", "reference", "idempotency_key", "note"]
    date_hierarchy = "created_at"
    list_select_related = ["account", "api_key", "created_by"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = CreditForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["account", "amount", "note"]
        return [f.name for f in LedgerEntry._meta.fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [f.name for f in LedgerEntry._meta.fields]

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_staff

    def save_model(self, request, obj, form, change):
        entry = services.staff_credit(
            user=form.cleaned_data["account"],
            amount=form.cleaned_data["amount"],
            created_by=request.user,
            note=form.cleaned_data["note"],
        )
        obj.pk = entry.pk
        obj.__dict__.update({f.attname: getattr(entry, f.attname) for f in LedgerEntry._meta.concrete_fields})
        obj._state.adding = False


@admin.register(BillingAccount)
class BillingAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance", "version", "updated_at"]
    search_fields = ["user__username"]
    readonly_fields = ["user", "balance", "version", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(PriceVersion)
class PriceVersionAdmin(ReadOnlyAdmin):
    list_display = ["model_name", "price_input_per_million", "price_output_per_million", "multiplier", "effective_from"]
    list_filter = ["model_name"]
    readonly_fields = [
        "model", "model_name", "price_input_per_million", "price_output_per_million", "multiplier", "effective_from",
    ]  # fmt: skip

    def has_add_permission(self, request) -> bool:
        return False  # a version starts when a catalog model's prices are saved


@admin.register(DynamicPrice)
class DynamicPriceAdmin(admin.ModelAdmin):
    """Which models float with demand, and between which multipliers (billing.pricing moves them)."""

    list_display = ["model", "enabled", "floor", "ceiling", "repriced_at"]
    list_filter = ["enabled"]
    fields = ["model", "enabled", "floor", "ceiling", "repriced_at"]
    readonly_fields = ["repriced_at"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # The multiplier in force is brought within the new bounds at once (or back to 1 when off).
        services.price_version_record(obj.model, None if obj.enabled else 1)
