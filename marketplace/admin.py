from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from marketplace import services
from marketplace.models import AccountPreference, EarningEntry, HostProfile, NodeStanding, Payout, VerificationCheck


@admin.register(HostProfile)
class HostProfileAdmin(admin.ModelAdmin):
    list_display = ["display_name", "user", "revenue_share", "created_at"]
    search_fields = ["display_name", "user__username"]
    raw_id_fields = ["user"]


@admin.register(AccountPreference)
class AccountPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "trusted_only"]
    list_filter = ["trusted_only"]
    raw_id_fields = ["user"]


@admin.register(EarningEntry)
class EarningEntryAdmin(admin.ModelAdmin):
    """Read-only: entries are written by marketplace.services, never edited."""

    list_display = ["created_at", "host", "kind", "amount", "node_name", "model", "request_id", "available_at"]
    list_filter = ["kind"]
    search_fields = ["request_id", "idempotency_key", "host__display_name", "node_name"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _payout_action(step, label):
    def action(modeladmin, request, queryset):
        for payout in queryset:
            try:
                if step == "paid":
                    services.payout_mark_paid(payout=payout, staff=request.user, reference=f"admin-{payout.pk}")
                elif step == "approve":
                    services.payout_approve(payout=payout, staff=request.user)
                else:
                    services.payout_reject(payout=payout, staff=request.user)
            except ValidationError as error:
                modeladmin.message_user(request, " ".join(error.messages), messages.ERROR)

    action.short_description = label
    action.__name__ = f"payout_{step}"
    return action


@admin.register(Payout)
class PayoutAdmin(admin.ModelAdmin):
    """Payouts move only through their actions (each a ledger entry); use the dashboard's payouts
    page to mark one paid with a real reference."""

    list_display = ["id", "host", "amount", "status", "requested_at", "decided_by", "paid_at", "reference"]
    list_filter = ["status"]
    search_fields = ["host__display_name", "reference"]
    readonly_fields = [f.name for f in Payout._meta.fields]
    actions = [
        _payout_action("approve", "Approve the selected payouts"),
        _payout_action("paid", "Mark the selected payouts paid (reference admin-<id>)"),
        _payout_action("reject", "Reject the selected payouts (the money returns to available)"),
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(NodeStanding)
class NodeStandingAdmin(admin.ModelAdmin):
    list_display = ["node", "checks", "strikes", "suspended_at", "suspension_reason"]
    list_filter = ["suspended_at"]
    raw_id_fields = ["node"]


@admin.register(VerificationCheck)
class VerificationCheckAdmin(admin.ModelAdmin):
    list_display = ["created_at", "request_id", "node", "model", "outcome", "checked_at"]
    list_filter = ["outcome"]
    search_fields = ["request_id"]
    readonly_fields = [f.name for f in VerificationCheck._meta.fields]
