"""Metering: what one request used, written to its usage record exactly once."""

from __future__ import annotations

import logging
import time

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from deployments.models import CatalogModel
from inference.services import usage_record

logger = logging.getLogger(__name__)


class UsageMeter:
    """Collects what one request used and writes its usage record exactly once."""

    def __init__(self, request: HttpRequest, endpoint: str) -> None:
        self.request = request
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.model: CatalogModel | None = None
        self.model_name = ""
        self.deployment = ""
        self.worker = ""
        self.stream = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._recorded = False

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    async def record(self, status_code: int, error_code: str | None = None) -> None:
        if self._recorded:
            return
        self._recorded = True
        api_key = self.request.api_key
        cost = self.model.cost(self.prompt_tokens, self.completion_tokens) if self.model else 0
        ttft = None if self.first_token_at is None else round((self.first_token_at - self.started) * 1000)
        try:
            await sync_to_async(usage_record)(
                request_id=self.request.request_id,
                user_id=api_key.user_id,
                api_key=api_key,
                endpoint=self.endpoint,
                model=self.model_name,
                deployment=self.deployment,
                worker=self.worker,
                stream=self.stream,
                status_code=status_code,
                error_code=error_code or "",
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                latency_ms=round((time.monotonic() - self.started) * 1000),
                time_to_first_token_ms=ttft,
                cost=cost,
            )
        except Exception:  # metering must never turn a served request into a failure
            logger.exception("Could not record usage for %s", self.request.request_id)
