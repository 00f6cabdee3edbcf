from django.contrib import admin

from inference.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "request_id",
        "user",
        "api_key",
        "model",
        "status_code",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "cost",
        "worker",
    ]
    list_filter = ["status_code", "model", "stream", "endpoint"]
    search_fields = ["request_id", "model", "user__username", "worker"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in UsageRecord._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False  # usage is written by the platform, once per request

    def has_change_permission(self, request, obj=None) -> bool:
        return False
