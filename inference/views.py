"""The OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings``."""

from __future__ import annotations

import base64
import secrets

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse

from accounts.auth import api_key_required
from accounts.models import ApiKey
from deployments.models import CatalogModel, Deployment, Task
from deployments.selectors import resolve_model, running_deployment_for, servable_models
from gpucloud.openai_errors import ApiError, invalid_request, model_not_found, service_unavailable
from inference.calls import EmbeddingCall, InferenceCall
from inference.metering import UsageMeter
from inference.responses import ChatCompletion, TextCompletion
from inference.transport import PRIORITY_BY_TIER
from inference.validation import parse_chat_request, parse_completion_request, parse_embedding_request
from nodeprotocol import EmbeddingJob, GenerationJob
from nodeprotocol.jobs import unpack_floats
from nodeprotocol.tokens import count_chat_tokens, count_tokens


def _model_object(model: CatalogModel) -> dict:
    return {
        "id": model.model_id,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": model.owned_by,
    }


@api_key_required(ApiKey.Scope.INFERENCE)
async def models_list(request):
    models = [model async for model in servable_models() if request.api_key.may_use(model.model_id)]
    return JsonResponse({"object": "list", "data": [_model_object(m) for m in models]})


@api_key_required(ApiKey.Scope.INFERENCE)
async def models_detail(request, model_id: str):
    model = await sync_to_async(resolve_model)(model_id)
    servable = model is not None and await servable_models().filter(pk=model.pk).aexists()
    if not servable or not request.api_key.may_use(model.model_id):
        raise model_not_found(model_id)
    return JsonResponse(_model_object(model))


def check_model_access(api_key: ApiKey, model: CatalogModel) -> None:
    if not api_key.may_use(model.model_id):
        raise ApiError(
            f"This API key may not use the model '{model.model_id}'. Its allowed models are: "
            f"{', '.join(api_key.allowed_models)}.",
            status=403,
            type="permission_error",
            param="model",
            code="model_not_allowed",
        )


def request_body(request) -> bytes:
    """The request's body; an OpenAI-shaped 413 past DATA_UPLOAD_MAX_MEMORY_SIZE (Django's own
    answer would be an HTML page)."""
    try:
        return request.body
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raise ApiError(
            f"The request body is larger than this server accepts ({limit / 1_000_000:g} MB). "
            "Send fewer or shorter inputs per request.",
            status=413,
            code="request_too_large",
        ) from None


def check_model_task(model: CatalogModel, task: str) -> None:
    """400 when the model does not do what the endpoint asks (a chat model asked for embeddings, …)."""
    if model.task == task:
        return
    if task == Task.EMBEDDING:
        message = f"The model '{model.model_id}' is a chat model: it does not serve embeddings. Use an embedding model."
    else:
        message = (
            f"The model '{model.model_id}' is an embedding model: it serves only /v1/embeddings. Use a chat model here."
        )
    raise invalid_request(message, param="model", code="model_not_supported")


async def _resolve(request, meter: UsageMeter, name: str, task: str) -> tuple[CatalogModel, Deployment]:
    """The model ``name`` means and a running deployment of it, after the key's allow-list and the
    model's task are checked: 404, 403, 400 or 503 otherwise. Fills in the meter's model fields."""
    meter.model_name = name
    model, deployment = await sync_to_async(running_deployment_for)(name)
    if model is None:
        raise model_not_found(name)
    check_model_access(request.api_key, model)
    check_model_task(model, task)
    if deployment is None:
        raise service_unavailable(
            f"The model '{name}' has no running deployment right now. Retry later.", code="model_not_ready"
        )
    meter.model, meter.model_name, meter.deployment = model, model.model_id, deployment.name
    return model, deployment


def _priority(api_key: ApiKey) -> int:
    return PRIORITY_BY_TIER.get(api_key.priority, PRIORITY_BY_TIER[ApiKey.Priority.STANDARD])


async def _dispatch(
    request, meter: UsageMeter, params, *, prompt: str, prompts: list[str], prompt_tokens: int, **job_fields
):
    """Resolve the model, check access and context, and hand the job to a GPU worker.

    ``params`` is a validated ChatRequest or CompletionRequest; ``job_fields`` go into the job.
    Returns the started call and the model.
    """
    meter.stream = params.stream
    model, deployment = await _resolve(request, meter, params.model, Task.CHAT)
    meter.prompt_tokens = prompt_tokens
    longest_prompt = max((count_tokens(p) for p in prompts), default=prompt_tokens)
    room = model.context_length - longest_prompt
    if room < (params.max_tokens or 1):
        raise invalid_request(
            f"This model's maximum context length is {model.context_length} tokens; your prompt takes "
            f"{longest_prompt} and you asked for {params.max_tokens or 1} more. Shorten the prompt or lower "
            "max_tokens.",
            param="prompt" if prompts else "messages",
            code="context_length_exceeded",
        )
    n = params.n * max(len(prompts), 1)
    job = GenerationJob(
        request_id=request.request_id,
        model=model.model_id,
        parameters_billion=float(model.parameters_billion),
        gpu_profile=deployment.gpu_profile,
        prompt=prompt,
        prompts=prompts,
        prompt_tokens=prompt_tokens,
        max_tokens=params.max_tokens or room,
        max_tokens_given=params.max_tokens is not None,
        temperature=params.temperature,
        top_p=params.top_p,
        n=n,
        stop=params.stop,
        # A seed even when the client gave none: the text stays random per request, and a worker
        # taking over from a dead one can reproduce it exactly.
        seed=params.seed if params.seed is not None else secrets.randbits(63),
        seed_given=params.seed is not None,
        **job_fields,
    )
    call = InferenceCall(meter, deployment, job, priority=_priority(request.api_key), stream=params.stream)
    await call.submit()
    return call, model


async def _respond(completion, stream: bool):
    if stream:
        response = StreamingHttpResponse(completion.stream(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    return JsonResponse(await completion.collect())


@api_key_required(ApiKey.Scope.INFERENCE, methods=("POST",))
async def chat_completions(request):
    meter = UsageMeter(request, endpoint="chat.completions")
    try:
        chat = parse_chat_request(request_body(request))
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in chat.messages)
        call, model = await _dispatch(
            request,
            meter,
            chat,
            prompt=prompt,
            prompts=[],
            prompt_tokens=count_chat_tokens(chat.messages),
            messages=chat.messages,
        )
    except ApiError as error:
        await meter.record(error.status, error.code)
        raise
    return await _respond(ChatCompletion(call, model.model_id, include_usage=chat.include_usage), chat.stream)


@api_key_required(ApiKey.Scope.INFERENCE, methods=("POST",))
async def completions(request):
    meter = UsageMeter(request, endpoint="completions")
    try:
        params = parse_completion_request(request_body(request))
        prompt_tokens = sum(count_tokens(p) for p in params.prompts)
        call, model = await _dispatch(
            request, meter, params, prompt=params.prompts[0], prompts=params.prompts, prompt_tokens=prompt_tokens
        )
    except ApiError as error:
        await meter.record(error.status, error.code)
        raise
    # Choice i answers prompt i // n; with echo it starts with that prompt.
    echoed = [params.prompts[i // params.n] if params.echo else "" for i in range(call.job.n)]
    completion = TextCompletion(call, model.model_id, include_usage=params.include_usage, echoed=echoed)
    return await _respond(completion, params.stream)


@api_key_required(ApiKey.Scope.INFERENCE, methods=("POST",))
async def embeddings(request):
    meter = UsageMeter(request, endpoint="embeddings")
    try:
        params = parse_embedding_request(request_body(request))
        model, deployment = await _resolve(request, meter, params.model, Task.EMBEDDING)
        counts = [count_tokens(text) for text in params.inputs]
        meter.prompt_tokens = sum(counts)
        for index, count in enumerate(counts):
            if count > model.context_length:
                raise invalid_request(
                    f"This model's maximum context length is {model.context_length} tokens; input {index} takes "
                    f"{count}. Shorten or split it.",
                    param="input" if len(counts) == 1 else f"input[{index}]",
                    code="context_length_exceeded",
                )
        job = EmbeddingJob(
            request_id=request.request_id,
            model=model.model_id,
            texts=params.inputs,
        )
        call = EmbeddingCall(meter, deployment, job, priority=_priority(request.api_key))
        await call.submit()
        vectors, usage = await call.result()
        dimensions = len(vectors[0]) // 4
        if params.dimensions is not None and params.dimensions != dimensions:
            raise invalid_request(
                f"The model '{model.model_id}' gives {dimensions}-dimensional embeddings and cannot shorten them: "
                f"leave out 'dimensions' or set it to {dimensions}.",
                param="dimensions",
            )
    except ApiError as error:
        await meter.record(error.status, error.code)
        raise
    await meter.record(200)
    if params.encoding_format == "base64":
        encoded = [base64.b64encode(vector).decode("ascii") for vector in vectors]
    else:
        encoded = [unpack_floats(vector) for vector in vectors]
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
    prompt_tokens = usage["prompt_tokens"]
    return JsonResponse(
        {
            "object": "list",
            "data": data,
            "model": model.model_id,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )
