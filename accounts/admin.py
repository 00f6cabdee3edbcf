from django.contrib import admin, messages
from django.utils import timezone

from accounts.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_prefix",
        "user",
        "scopes",
        "rpm",
        "tpm",
        "max_budget",
        "created_at",
        "last_used_at",
        "request_count",
        "state",
    ]
    list_filter = ["revoked_at", "created_at"]
    search_fields = ["name", "prefix", "user__username"]
    # The hash is never shown: it is not the key and is of no use to an operator.
    fields = [
        "user",
        "name",
        "display_prefix",
        "scopes",
        "rpm",
        "priority",
        "allowed_models",
        "max_budget",
        "budget_period",
        "budget_soft_percent",
        "tpm",
        "max_parallel",
        "trusted_only",
        "expires_at",
        "revoked_at",
        "created_at",
        "last_used_at",
        "request_count",
    ]
    readonly_fields = ["user", "display_prefix", "created_at", "last_used_at", "request_count", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="key")
    def display_prefix(self, obj: ApiKey) -> str:
        return f"{obj.display_prefix}…"

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        return "revoked" if obj.is_revoked else "expired" if obj.is_expired else "active"

    def has_add_permission(self, request) -> bool:
        # Keys are created in the dashboard or with manage.py createapikey, where the key is shown once.
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)
