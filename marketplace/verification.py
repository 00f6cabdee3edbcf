"""Checked results: a sample of community nodes' deterministic answers is re-run on a trusted node.

When a generation ends (``inference.calls.InferenceCall``), :func:`consider` samples
``VERIFY_SAMPLE_RATE`` of the deterministic ones (temperature 0, or a seed the client gave) that
one community node produced alone. In the background, in the same web process, the same job (same
seed, same parameters) is queued again with trusted-only routing, so that only a trusted node runs
it, and the texts are compared. A difference is a strike, recorded with both outputs
(:class:`~marketplace.models.VerificationCheck`); ``VERIFY_STRIKES_TO_SUSPEND`` strikes suspend
the node: its credential is revoked (its socket closes, it takes no new work and cannot come
back), its earnings not yet paid out are held for an operator's decision, and its Host page says
why. The re-run is nobody's request: it is not journaled, metered or charged.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
import random
from types import SimpleNamespace

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

logger = logging.getLogger(__name__)

VERIFY_PREFIX = "verify-"
# Re-runs wait behind customers' work of every tier: they are the platform's own.
VERIFY_PRIORITY = 9
_running: set[asyncio.Task] = set()


def eligible(job) -> bool:
    """Whether a generation may be sampled: deterministic (temperature 0, or the client's seed),
    and checks are on."""
    return settings.VERIFY_SAMPLE_RATE > 0 and (job.temperature == 0 or job.seed_given)


def consider(call) -> None:
    """Sample a finished generation for a check; cheap, and never raises into the request."""
    try:
        job, meter = call.job, call.meter
        if call.request_id.startswith(VERIFY_PREFIX) or call.texts is None or not eligible(job):
            return
        worker = meter.worker
        if not worker or any(node != worker for node, tokens in meter.produced.items() if tokens):
            return  # failed over: no one node's output
        if random.random() >= settings.VERIFY_SAMPLE_RATE:
            return
        # The check outlives its request: it runs in a context of its own, not in the request's,
        # whose thread (asgiref's ThreadSensitiveContext) is given back when the request ends.
        task = asyncio.get_running_loop().create_task(
            verify(job, worker, list(call.texts)), context=contextvars.Context()
        )
        _running.add(task)
        task.add_done_callback(_running.discard)
    except Exception:
        logger.exception("Could not sample %s for verification", getattr(call, "request_id", "?"))


async def verify(job, worker: str, texts: list[str]) -> None:
    """Re-run ``job`` on a trusted node and record the outcome against ``worker``."""
    check_id = await sync_to_async(check_open)(job=job, worker=worker, texts=texts)
    if check_id is None:
        return
    try:
        trusted = await sync_to_async(_trusted_deployment)(job.model)
        if trusted is None:
            await sync_to_async(check_error)(check_id, "No trusted node serves this model now.")
            return
        rerun = dataclasses.replace(job, request_id=f"{VERIFY_PREFIX}{job.request_id}", fast_forward=[])
        trusted_texts = await _rerun(trusted, rerun)
    except Exception as error:  # an outage or a timeout is no strike against the node
        logger.warning("Could not verify %s: %s", job.request_id, error)
        await sync_to_async(check_error)(check_id, str(error)[:500] or type(error).__name__)
        return
    await sync_to_async(check_close)(check_id, trusted_texts)


async def _rerun(deployment, job) -> list[str]:
    from inference.calls import InferenceCall
    from inference.metering import UsageMeter

    class VerificationCall(InferenceCall):
        async def submit(self) -> None:  # as QueuedCall.submit, unjournaled: nobody is billed for it
            self.channel = await self.layer.new_channel()
            self.reader = asyncio.create_task(self._read())
            await self._dispatch(self.priority)
            await self._next(settings.INFERENCE_QUEUE_TIMEOUT, waiting_for_worker=True)

    platform = SimpleNamespace(api_key=SimpleNamespace(user_id=0, pk=None), request_id=job.request_id)
    meter = UsageMeter(platform, endpoint="verification")
    meter.trusted_only = True
    call = VerificationCall(meter, deployment, job, priority=VERIFY_PRIORITY, stream=False)
    try:
        await call.submit()
        texts = [""] * job.n
        async for event in call.events():
            if event.get("reset"):
                texts = [""] * job.n
                continue
            texts[event["i"]] += event["t"]
        return texts
    except BaseException:
        await asyncio.shield(call.cancel())
        raise


def _trusted_deployment(model_id: str):
    from deployments.models import CatalogModel
    from marketplace.selectors import trusted_deployment_for

    model = CatalogModel.objects.filter(model_id=model_id).first()
    return trusted_deployment_for(model) if model is not None else None


def _output(texts: list[str]) -> str:
    return texts[0] if len(texts) == 1 else json.dumps(texts)


def check_open(*, job, worker: str, texts: list[str]) -> int | None:
    """Record a sampled request of a community node (None for any other node, or one suspended)."""
    from deployments.models import Trust, WorkerNode
    from marketplace.models import NodeStanding, VerificationCheck

    node = WorkerNode.objects.filter(name=worker, trust=Trust.COMMUNITY).first()
    if node is None or NodeStanding.objects.filter(node=node, suspended_at__isnull=False).exists():
        return None
    check, _ = VerificationCheck.objects.get_or_create(
        request_id=job.request_id,
        defaults={"node": node, "model": job.model, "request": job.to_wire(), "community_output": _output(texts)},
    )
    return check.pk


def check_error(check_id: int, detail: str) -> None:
    from marketplace.models import VerificationCheck

    VerificationCheck.objects.filter(pk=check_id, outcome=VerificationCheck.Outcome.PENDING).update(
        outcome=VerificationCheck.Outcome.ERROR, detail=detail[:500], checked_at=timezone.now()
    )


def check_close(check_id: int, trusted_texts: list[str]) -> None:
    """Compare, count the check, and strike (and at the limit suspend) the node on a mismatch."""
    from deployments.fleet import node_credential_revoke
    from deployments.models import WorkerNode
    from marketplace.models import NodeStanding, VerificationCheck

    with transaction.atomic():
        check = VerificationCheck.objects.select_for_update().select_related("node").get(pk=check_id)
        if check.outcome != VerificationCheck.Outcome.PENDING:
            return
        standing, _ = NodeStanding.objects.get_or_create(node=check.node)
        standing = NodeStanding.objects.select_for_update().get(pk=standing.pk)
        check.trusted_output = _output(trusted_texts)
        check.checked_at = timezone.now()
        standing.checks += 1
        if check.trusted_output == check.community_output:
            check.outcome = VerificationCheck.Outcome.MATCH
        else:
            check.outcome = VerificationCheck.Outcome.MISMATCH
            check.detail = "The community node's output differs from a trusted node's for the same deterministic job."
            standing.strikes += 1
            # The node's reliability score (deployments.reliability) counts its strikes too.
            WorkerNode.objects.filter(pk=check.node_id).update(verification_strikes=F("verification_strikes") + 1)
            if standing.strikes >= settings.VERIFY_STRIKES_TO_SUSPEND and standing.suspended_at is None:
                standing.suspended_at = timezone.now()
                standing.suspension_reason = (
                    f"Suspended after {standing.strikes} verification mismatches: on deterministic requests "
                    f"(the latest {check.request_id}) this node's output differed from a trusted node's. It takes "
                    "no new work, and its unpaid earnings are held until an operator decides."
                )[:500]
                node_credential_revoke(node=check.node)
                logger.warning("Suspended %s: %s", check.node.name, standing.suspension_reason)
        check.save()
        standing.save()
