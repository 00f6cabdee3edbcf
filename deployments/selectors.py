"""Reads of the catalog and deployments."""

from __future__ import annotations

from django.db.models import QuerySet

from deployments.models import CatalogModel, Deployment


def servable_models() -> QuerySet[CatalogModel]:
    """Models with at least one running deployment: what ``GET /v1/models`` lists."""
    return CatalogModel.objects.filter(deployments__status=Deployment.Status.RUNNING).distinct()


def running_deployment_for(model_id: str) -> tuple[CatalogModel | None, Deployment | None]:
    """The catalog entry for ``model_id`` and a running deployment of it (either may be None)."""
    model = CatalogModel.objects.filter(model_id=model_id).first()
    if model is None:
        return None, None
    deployment = model.deployments.filter(status=Deployment.Status.RUNNING).order_by("created_at").first()
    return model, deployment


def running_queue_names() -> list[str]:
    return [d.queue_name for d in Deployment.objects.filter(status=Deployment.Status.RUNNING)]
