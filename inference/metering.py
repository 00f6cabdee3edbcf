"""Metering and billing of one request: admitted before it is queued, settled exactly once.

A request that passed validation is *admitted* (``billing.admission.admit``: balance, key
budget, tokens per minute and requests in flight, checked and reserved together) before its job
is queued. When it ends, :meth:`UsageMeter.record` settles it: the usage record and the charge in
one transaction (``billing.admission.settle``). What is charged is what the client got: a whole
answer at the tokens the engine reported; a stream cut short (an error after text was sent, or
the client going away) at the prompt and the text delivered; anything else nothing. Requests
refused before admission are recorded at no cost.

The database work runs thread-sensitively: in the request's own thread under Daphne (one per
request, so nothing queues behind it), and on the test's connection in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from billing import admission
from billing.admission import Reservation
from deployments.models import CatalogModel
from gpucloud import request_threads
from gpucloud.openai_errors import ApiError
from inference import journal
from inference.services import usage_record
from observability import metrics

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499


class UsageMeter:
    """Collects what one request used; admits it, and settles or records it exactly once."""

    def __init__(self, request: HttpRequest, endpoint: str) -> None:
        self.request = request
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.model: CatalogModel | None = None
        self.model_name = ""
        self.deployment = ""
        self.worker = ""
        # GPU host marketplace: keep the request on trusted nodes; and the completion tokens each
        # node produced (more than one when it failed over mid-stream), which its host is paid for.
        self.trusted_only = False
        self.produced: dict[str, int] = {}
        self.stream = False
        self.prompt_tokens = 0
        # The engine's count once the node is done; until then the provisional count of the text
        # handed to the client (inference.calls), which is what a request cut short is billed.
        self.completion_tokens = 0
        self.reservation: Reservation | None = None
        self.cost: Decimal | None = None  # what the request was charged, once recorded
        self._recorded = False

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    async def admit(self, model: CatalogModel, *, prompt_tokens: int, max_tokens: int) -> None:
        """Reserve the request's worst case and limits, or raise AdmissionRefused (429) / 503.

        ``max_tokens`` is the most the whole request may generate (every choice together).
        """
        admitting = asyncio.ensure_future(
            sync_to_async(admission.admit)(
                self.request.api_key,
                model,
                request_id=self.request.request_id,
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
            )
        )
        try:
            self.reservation = await request_threads.shield(admitting)
        except asyncio.CancelledError:
            # The client left while the reservation was being made: keep it, so that recording
            # the request (499) frees it rather than leaving it to expire.
            with contextlib.suppress(Exception):
                self.reservation = await admitting
            raise

    def headers(self) -> dict[str, str]:
        """The token rate-limit headers of an admitted request (none for a key without a TPM limit)."""
        return self.reservation.headers() if self.reservation is not None else {}

    def billable(self, status_code: int) -> bool:
        """Whether the client got something to pay for: a whole answer, or part of a stream."""
        return status_code == 200 or (self.stream and self.completion_tokens > 0)

    def usage(self, usage: dict) -> dict:
        """``usage`` as the client sees it: the tokens, and the request's cost in USD."""
        if self.cost is None:
            return usage
        return {**usage, "cost": float(self.cost)}

    async def record(self, status_code: int, error_code: str | None = None) -> None:
        """Settle the request (or record a refused one at no cost); only the first call counts."""
        if self._recorded:
            return
        self._recorded = True
        ttft = None if self.first_token_at is None else round((self.first_token_at - self.started) * 1000)
        fields = {
            "endpoint": self.endpoint,
            "model": self.model_name,
            "deployment": self.deployment,
            "worker": self.worker,
            "stream": self.stream,
            "status_code": status_code,
            "error_code": error_code or "",
            "latency_ms": round((time.monotonic() - self.started) * 1000),
            "time_to_first_token_ms": ttft,
        }
        metrics.request_finished(self, status_code)
        try:
            if self.reservation is not None:
                record = await sync_to_async(admission.settle)(
                    self.reservation,
                    prompt_tokens=self.prompt_tokens,
                    completion_tokens=self.completion_tokens,
                    charge=self.billable(status_code),
                    produced=self.produced,
                    **fields,
                )
            else:  # refused before admission: nothing was reserved, nothing is charged
                api_key = self.request.api_key
                record = await sync_to_async(usage_record)(
                    request_id=self.request.request_id,
                    user_id=api_key.user_id,
                    api_key=api_key,
                    prompt_tokens=self.prompt_tokens,
                    completion_tokens=self.completion_tokens,
                    cost=Decimal("0"),
                    **fields,
                )
            self.cost = record.cost
            metrics.request_charged(self)
        except Exception:  # metering must never turn a served request into a failure
            logger.exception("Could not record usage for %s", self.request.request_id)
            return  # left in the journal: if this process dies, a survivor settles it
        await journal.close_entry(self.request.request_id)

    @contextlib.asynccontextmanager
    async def failures(self) -> AsyncIterator[None]:
        """Record a request that ends in the block: an ApiError with its status, the client going
        away as 499, anything else as 500; so a reservation is never left behind."""
        try:
            yield
        except ApiError as error:
            await request_threads.shield(self.record(error.status, error.code))
            raise
        except asyncio.CancelledError:
            await request_threads.shield(self.record(CLIENT_CLOSED, "client_closed_request"))
            raise
        except Exception:
            await request_threads.shield(self.record(500, "server_error"))
            raise
