"""What the playground offers."""

from __future__ import annotations

from deployments.models import CatalogModel, Task
from deployments.selectors import servable_models


def playground_models() -> list[CatalogModel]:
    """The chat models a request can go to now (what ``GET /v1/models`` lists, less embedding
    models), by id."""
    return list(servable_models().filter(task=Task.CHAT).order_by("model_id"))
