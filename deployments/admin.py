from django.contrib import admin

from deployments.models import CatalogModel, Deployment


class DeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0
    fields = ["name", "engine", "gpu_profile", "replicas", "status"]


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = [
        "model_id",
        "family",
        "parameters_billion",
        "context_length",
        "price_input_per_million",
        "price_output_per_million",
        "default_engine",
    ]
    list_filter = ["family", "default_engine"]
    search_fields = ["model_id", "family"]
    inlines = [DeploymentInline]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["name", "model", "engine", "gpu_profile", "replicas", "status", "created_at"]
    list_filter = ["status", "engine", "gpu_profile"]
    search_fields = ["name", "model__model_id"]
