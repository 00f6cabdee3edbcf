"""Checked results, with real processes: a community node that alters its output is caught by
re-runs on a real trusted node and suspended; an honest community node is never struck."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.models import LedgerEntry
from conftest import BASE_DIR, ProtocolNode, _free_port, wait_for
from deployments.models import Deployment
from gpucloud.daphne import command as daphne_command
from gpunode.engines import get_engine
from gpunode.generation import generate
from inference.models import UsageRecord
from marketplace.models import EarningEntry, NodeStanding, VerificationCheck
from marketplace.selectors import host_balances
from marketplace.services import host_become, host_join_token_create
from nodeprotocol import VERSION, GenerationJob
from nodeprotocol.tokens import count_tokens

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"


def _true_text(spec: dict) -> str:
    """What the simulated engine (which every node here claims to run) gives for the job."""
    pieces = []

    async def emit(index, text, reason):
        pieces.append(text)

    asyncio.run(generate(get_engine("simulated", {}), GenerationJob.from_wire(spec), emit))
    return "".join(pieces)


class ScriptedNode(ProtocolNode):
    """A community node played by the test; ``alter`` changes the text it sends back."""

    def __init__(self, live, name: str, host, *, alter: bool):
        _, token = host_join_token_create(host=host, name=name)
        body = {"token": token, "name": name, "engine": "simulated", "slots": 4, "protocol": VERSION,
                "gpus": [{"index": 0, "name": "A100-80GB", "memory_total_mb": 81920}]}  # fmt: skip
        response = httpx.post(f"{live.url}/api/workers/register", json=body, timeout=10)
        assert response.status_code == 201, response.text
        super().__init__(live, name, registration=response.json())
        self.alter = alter
        self.jobs = 0
        self.connect()
        threading.Thread(target=self._answer, daemon=True).start()

    def _answer(self) -> None:
        while self.closed is None and not self._stop:
            try:
                job = self.next("job", timeout=1)
            except AssertionError:
                continue
            text = _true_text(job["spec"])
            if self.alter:
                text = text.upper()
            self.jobs += 1
            try:
                self.send({"type": "job.events", "job": job["job"], "events": [{"i": 0, "t": text, "f": "stop"}]})
                usage = {"prompt_tokens": job["spec"]["prompt_tokens"], "completion_tokens": count_tokens(text)}
                self.send({"type": "job.done", "job": job["job"], "usage": usage})
            except Exception:
                return


def _answers(url: str) -> bool:
    """The web process is up (its /health may say 503 while no node is connected yet)."""
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def _host(name: str):
    user = get_user_model().objects.create_user(f"{name}-{uuid.uuid4().hex[:8]}", password="host password")
    return host_become(user=user, display_name=name)


@pytest.fixture
def checking_web(fleet, monkeypatch):
    """A second web process (same database, Redis and nodes) that samples every deterministic request."""
    monkeypatch.setenv("SIMULATED_ENGINE_INSTANT", "true")
    port = _free_port()
    env = {**fleet.env, "VERIFY_SAMPLE_RATE": "1", "VERIFY_STRIKES_TO_SUSPEND": "3"}
    process = subprocess.Popen(daphne_command("127.0.0.1", port), env=env, cwd=BASE_DIR)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=60, message="the checking web process")
        yield url
    finally:
        fleet.stop(process)


def test_a_node_that_alters_its_output_is_caught_and_suspended(fleet, checking_web, make_key, client):
    cheat_host, honest_host = _host("cheat"), _host("honest")
    fleet.scale(MODEL, replicas=3, placement=Deployment.Placement.SPREAD)
    fleet.start_worker("checker")  # the operator's trusted node, a real one
    cheat = ScriptedNode(fleet, "cheat", cheat_host, alter=True)
    honest = ScriptedNode(fleet, "honest", honest_host, alter=False)
    try:
        for name in ("checker", "cheat", "honest"):
            fleet.wait_serving(name)
        cheat_node, honest_node = fleet.node("cheat"), fleet.node("honest")
        _, key = make_key(fleet.user, rpm=1000)

        def suspended():
            return NodeStanding.objects.filter(node=cheat_node, suspended_at__isnull=False).first()

        def honest_checked():
            checks = VerificationCheck.objects.filter(node=honest_node).exclude(
                outcome=VerificationCheck.Outcome.PENDING
            )
            return checks.count() >= 2

        sent = 0
        while not (suspended() and honest_checked()) and sent < 80:
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"Question {sent}"}], "max_tokens": 16,
                    "temperature": 0 if sent % 2 else 1, "seed": 1000 + sent}  # fmt: skip
            response = httpx.post(
                f"{checking_web}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=60
            )
            assert response.status_code == 200, response.text
            sent += 1
            if sent % 6 == 0:  # let the re-runs (queued behind customers' work) land
                wait_for(
                    lambda: not VerificationCheck.objects.filter(outcome=VerificationCheck.Outcome.PENDING).exists(),
                    timeout=60,
                    message="the verification re-runs",
                )
        standing = wait_for(suspended, timeout=60, message="the altering node to be suspended")
        assert standing.strikes >= 3
        cheat_node.refresh_from_db()
        assert cheat_node.verification_strikes == standing.strikes  # and its reliability score counts them
        mismatch = VerificationCheck.objects.filter(node=cheat_node, outcome=VerificationCheck.Outcome.MISMATCH).first()
        assert mismatch.community_output == mismatch.trusted_output.upper() != mismatch.trusted_output
        assert "mismatch" in standing.suspension_reason

        # The honest node was checked too, and never struck.
        honest_checks = VerificationCheck.objects.filter(node=honest_node).exclude(
            outcome=VerificationCheck.Outcome.PENDING
        )
        assert honest_checks.filter(outcome=VerificationCheck.Outcome.MATCH).exists()
        assert not honest_checks.filter(outcome=VerificationCheck.Outcome.MISMATCH).exists()
        assert not NodeStanding.objects.filter(node=honest_node, strikes__gt=0).exists()

        # Suspended: its socket is closed, it gets no new work, and its earnings are held.
        wait_for(lambda: cheat.closed, timeout=10, message="the suspended node's socket to close")
        jobs_before = cheat.jobs
        for n in range(3):
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"After {n}"}], "max_tokens": 8}
            httpx.post(f"{fleet.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body,
                       timeout=60)  # fmt: skip
        assert cheat.jobs == jobs_before
        assert EarningEntry.objects.filter(node=cheat_node).exists()
        balances = host_balances(cheat_host)
        assert balances["held"] > 0 and balances["pending"] == 0 and balances["available"] == 0
        # Re-runs are the platform's own: not recorded as anyone's usage, not charged.
        assert not UsageRecord.objects.filter(request_id__startswith="verify-").exists()
        assert not LedgerEntry.objects.filter(reference__startswith="verify-").exists()
        # The host is told why.
        client.force_login(cheat_host.user)
        assert "verification mismatches" in client.get(reverse("marketplace:host")).content.decode()
    finally:
        cheat.close()
        honest.close()
