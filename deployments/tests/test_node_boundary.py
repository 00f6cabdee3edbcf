"""The trust boundary: a GPU node gets its own credential and the node protocol, nothing else.

Hostile and scripted nodes are played by ``ProtocolNode`` (conftest), which speaks the protocol
by hand with a valid credential of its own; real nodes are ``python -m gpunode`` processes.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import openai
import pytest

from conftest import ProtocolNode, wait_for
from deployments.fleet import node_credential_revoke
from deployments.models import Deployment, Replica, WorkerNode
from gpunode.engines import get_engine
from gpunode.generation import generate
from inference.models import UsageRecord
from nodeprotocol import GenerationJob

pytestmark = pytest.mark.live

MODEL = "llama-3.1-8b-instruct"
HELLO = [{"role": "user", "content": "Say hello to the GPU cloud."}]


def _broker_secrets(live) -> list[str]:
    """What a node must never see: the server's Redis, database and secret key."""
    secrets = [live.env["REDIS_URL"], live.env["DATABASE_URL"], live.env["SECRET_KEY"], "redis://", "unix://"]
    return [s for s in secrets if s]


def _serving(live, name: str, model: str = MODEL):
    queue = Deployment.objects.get(model__model_id=model).queue_name
    return wait_for(
        lambda: (n := live.node(name)) is not None and queue in n.telemetry.get("queues", []) and n,
        timeout=30,
        message=f"{name} to serve {model}",
    )


def _in_background(function):
    """Run ``function`` in a thread; returns a dict that gets its ``result`` or ``error``."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = function()
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


def _stream_text(client, **kwargs) -> tuple[str, object]:
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}, **kwargs
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        elif chunk.usage:
            usage = chunk.usage
    return text, usage


@pytest.fixture
def client(fleet, make_key):
    _, key = make_key(fleet.user, rpm=10_000)
    return openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=key, max_retries=0, timeout=60)


def test_registration_hands_out_no_broker_secret(live):
    node = ProtocolNode(live, "inspector", serve=False).connect()
    try:
        assert set(node.registration) == {"node", "credential", "websocket_path", "heartbeat_interval", "protocol"}
        node.next("welcome")
        node.send({"type": "heartbeat", "slots": 1, "replicas": {"0": {"state": "running"}}, "gpus": []})
        node.next("assign")  # it reported a replica it does not have: the platform says what it has
        seen = repr([node.registration, *node.received])
        for secret in _broker_secrets(live):
            assert secret not in seen
    finally:
        node.close()


def test_a_node_of_another_protocol_version_is_refused(live):
    from nodeprotocol import VERSION

    body = {"token": live.join_token, "name": "old-node", "protocol": VERSION - 1}
    response = httpx.post(f"{live.url}/api/workers/register", json=body, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("protocol_version", "protocol")
    assert f"version {VERSION};" in error["message"] and f"version {VERSION - 1}." in error["message"]

    node = ProtocolNode(live, "old-socket", serve=False).connect(version=VERSION - 1)
    refused = node.next("refused")
    assert f"node protocol version {VERSION}" in refused["message"]
    wait_for(lambda: node.closed, timeout=5, message="the socket to close")
    assert node.closed[0] == 4003


def test_a_node_cannot_answer_end_or_bill_another_nodes_job(fleet, client):
    honest = ProtocolNode(fleet, "honest").connect()
    hostile = ProtocolNode(fleet, "hostile", serve=False, gpus=[])
    try:
        _serving(fleet, "honest")
        hostile.connect()
        call = _in_background(lambda: _stream_text(client, max_tokens=50))
        job = honest.next("job")
        request_id = job["spec"]["request_id"]

        # The hostile node guesses right: the job's id, and the request's id.
        for target in (job["job"], request_id):
            hostile.send({"type": "job.events", "job": target, "events": [{"i": 0, "t": "FORGED", "f": None}]})
            hostile.send({"type": "job.done", "job": target, "usage": {"prompt_tokens": 1, "completion_tokens": 999}})
            hostile.send({"type": "job.error", "job": target, "message": "FORGED", "code": "x", "status": 400})
        # ...and tries to make the platform run something of its own.
        hostile.send({"type": "job", "job": "mine", "kind": "generate", "replica": 1, "spec": job["spec"]})
        # A report of a replica it does not have is answered after everything it sent before.
        hostile.send({"type": "heartbeat", "slots": 4, "replicas": {"999999": {"state": "running"}}, "gpus": []})
        hostile.next("assign")

        honest.send({"type": "job.events", "job": job["job"], "events": [{"i": 0, "t": "honest text", "f": None}]})
        honest.send({"type": "job.events", "job": job["job"], "events": [{"i": 0, "t": "", "f": "stop"}]})
        usage = {"prompt_tokens": job["spec"]["prompt_tokens"], "completion_tokens": 2}
        honest.send({"type": "job.done", "job": job["job"], "usage": usage})
        call["thread"].join(30)

        assert "error" not in call, call.get("error")
        text, reported = call["result"]
        assert text == "honest text"
        assert reported.completion_tokens == 2
        record = wait_for(lambda: UsageRecord.objects.filter(request_id=request_id).first(), timeout=10)
        assert (record.worker, record.completion_tokens, record.status_code) == (honest.name, 2, 200)
        assert not [m for m in hostile.received if m["type"] == "job"]
    finally:
        honest.close()
        hostile.close()


def test_a_node_cannot_bill_more_than_its_job_allows(fleet, client):
    node = ProtocolNode(fleet, "greedy").connect()
    try:
        _serving(fleet, "greedy")
        call = _in_background(lambda: client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10))
        job = node.next("job")
        node.send({"type": "job.events", "job": job["job"], "events": [{"i": 0, "t": "Hi", "f": "stop"}]})
        node.send({"type": "job.done", "job": job["job"], "usage": {"prompt_tokens": 10, "completion_tokens": 999_999}})
        call["thread"].join(30)

        error = call["error"]
        assert isinstance(error, openai.APIStatusError) and error.status_code == 502
        assert error.body["code"] == "node_protocol_error"
        record = wait_for(lambda: UsageRecord.objects.filter(request_id=job["spec"]["request_id"]).first(), timeout=10)
        assert record.completion_tokens <= 10
        assert node.next("cancel")["job"] == job["job"]
    finally:
        node.close()


def test_a_node_cannot_speak_for_another_node(fleet):
    honest = ProtocolNode(fleet, "victim").connect()
    hostile = ProtocolNode(fleet, "impostor", serve=False, gpus=[])
    try:
        victim = _serving(fleet, "victim")
        hostile.connect()
        victims_replicas = {
            str(pk): {"state": "failed", "reason": "FORGED"} for pk in victim.replicas.values_list("pk", flat=True)
        }
        assert victims_replicas
        hostile.send({"type": "heartbeat", "node": victim.name, "slots": 4, "replicas": victims_replicas, "gpus": []})
        hostile.send({"type": "leaving", "node": victim.name})
        hostile.next("assign")  # processed: the platform answered with the impostor's own (empty) assignment

        assert set(Replica.objects.filter(node=victim).values_list("state", flat=True)) == {Replica.State.RUNNING}
        victim.refresh_from_db()
        assert victim.effective_status == WorkerNode.Status.ONLINE
    finally:
        honest.close()
        hostile.close()


def test_revoking_a_node_closes_its_socket_and_its_stream_continues_elsewhere(fleet, client, monkeypatch):
    """A node holding a stream is revoked: its socket closes at once, the stream continues on
    another node where the first stopped, and the revoked node cannot come back."""
    fleet.scale(MODEL, 2, placement=Deployment.Placement.SPREAD)
    doomed = ProtocolNode(fleet, "doomed").connect()
    try:
        _serving(fleet, "doomed")
        call = _in_background(lambda: _stream_text(client, max_tokens=60, seed=4242))
        job = doomed.next("job")
        # The doomed node sends the true start of the text (the simulated engine is deterministic).
        monkeypatch.setenv("SIMULATED_ENGINE_INSTANT", "true")
        pieces = []

        async def emit(index, text, reason):
            pieces.append(text)

        asyncio.run(generate(get_engine("simulated", {}), GenerationJob.from_wire(job["spec"]), emit))
        full = "".join(pieces)
        doomed.send({"type": "job.events", "job": job["job"], "events": [{"i": 0, "t": full[:15], "f": None}]})

        fleet.start_worker("rescuer")
        _serving(fleet, "rescuer")
        node_credential_revoke(node=fleet.node("doomed"))

        wait_for(lambda: doomed.closed, timeout=5, message="the revoked node's socket to close")
        assert doomed.closed[0] == 4003
        call["thread"].join(60)
        assert "error" not in call, call.get("error")
        text, _ = call["result"]
        assert text == full

        again = ProtocolNode(fleet, "doomed", registration=doomed.registration).connect()
        assert "revoked" in again.next("refused")["message"]
        wait_for(lambda: again.closed, timeout=5, message="the socket to close")
    finally:
        doomed.close()


def test_a_real_node_keeps_its_secrets_out_of_sight(fleet, tmp_path):
    state = tmp_path / "node-state"
    worker = fleet.start_worker("discreet", state_dir=state)
    node = fleet.wait_serving("discreet")

    saved = state / "node.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert f"gpcn_{node.credential_prefix}_" in saved.read_text()
    environ = Path(f"/proc/{worker.pid}/environ").read_bytes().decode(errors="replace")
    command_line = Path(f"/proc/{worker.pid}/cmdline").read_bytes().decode(errors="replace")
    assert "gpcn_" not in environ  # the credential is never in the environment
    assert fleet.join_token not in command_line  # nor the join token on the command line
    for secret in _broker_secrets(fleet):
        assert secret not in environ and secret not in command_line


def test_malformed_messages_are_dropped_and_the_node_keeps_its_socket(live):
    node = ProtocolNode(live, "garbler", serve=False).connect()
    try:
        node.next("welcome")
        for garbage in ("not json", "[" * 100_000 + "]" * 100_000, '{"type": "heartbeat", "slots": 1e999}', "[]"):
            node.ws.send(garbage)
        # Still connected and heard: a report of a replica it does not have is answered.
        node.send({"type": "heartbeat", "slots": 1, "replicas": {"0": {"state": "running"}}, "gpus": []})
        node.next("assign")
        assert node.closed is None
    finally:
        node.close()
