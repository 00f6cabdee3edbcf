"""The OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings``."""

from __future__ import annotations

import asyncio
import base64
import secrets

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse

from accounts.auth import api_key_required
from accounts.models import ApiKey
from billing.selectors import model_pricing
from deployments.models import CatalogModel, Deployment, Task
from deployments.selectors import resolve_model, running_deployment_for, servable_models
from gpucloud import request_threads
from gpucloud.openai_errors import ApiError, invalid_request, model_not_found, service_unavailable
from inference import bodypool
from inference.calls import EmbeddingCall, InferenceCall
from inference.metering import UsageMeter
from inference.responses import ChatCompletion, CompletionResponse, TextCompletion
from inference.transport import PRIORITY_BY_TIER
from inference.validation import (
    GenerationRequest,
    check_engine_support,
)
from nodeprotocol import EmbeddingJob, GenerationJob
from nodeprotocol.jobs import unpack_floats


def _model_object(model: CatalogModel) -> dict:
    return {
        "id": model.model_id,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": model.owned_by,
        # An extension: the prices in force now (a dynamic price's multiplier included).
        "pricing": model_pricing(model),
    }


@api_key_required(ApiKey.Scope.INFERENCE)
async def models_list(request):
    models = [model async for model in servable_models() if request.api_key.may_use(model.model_id)]
    data = await sync_to_async(lambda: [_model_object(m) for m in models])()
    return JsonResponse({"object": "list", "data": data})


@api_key_required(ApiKey.Scope.INFERENCE)
async def models_detail(request, model_id: str):
    model = await sync_to_async(resolve_model)(model_id)
    servable = model is not None and await servable_models().filter(pk=model.pk).aexists()
    if not servable or not request.api_key.may_use(model.model_id):
        raise model_not_found(model_id)
    return JsonResponse(await sync_to_async(_model_object)(model))


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


# Bodies larger than this are read, parsed, validated and counted off the event loop: a few large
# bodies must not stall it, and with it every other request of this process. From LARGE_BODY_BYTES
# on, the parsing runs in inference.bodypool's processes (the GIL stays free too).
OFF_LOOP_BODY_BYTES = 64 * 1024


async def read_body(request, kind: str) -> tuple:
    """What the view needs from the body (``bodypool.PARSERS[kind]``): on the event loop for a small
    body, off it for a large one or one of unknown length (chunked)."""
    try:
        size = int(request.META["CONTENT_LENGTH"])
    except (KeyError, ValueError):
        size = OFF_LOOP_BODY_BYTES + 1
    if size > OFF_LOOP_BODY_BYTES:
        return await sync_to_async(
            lambda: bodypool.parse_blocking(kind, request_body(request)), thread_sensitive=False
        )()
    return bodypool.parse_in_thread(kind, request_body(request))


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
    deployment = await _trusted_routing(request, meter, model, deployment)
    meter.model, meter.model_name, meter.deployment = model, model.model_id, deployment.name
    return model, deployment


async def _trusted_routing(request, meter: UsageMeter, model: CatalogModel, deployment: Deployment) -> Deployment:
    """GPU host marketplace: a trusted_only key (or account) gets a deployment with a replica on a
    trusted node, and its job a queue that community nodes never take from; 503 if none."""
    from marketplace.selectors import trusted_deployment_for, trusted_only_for

    if not await sync_to_async(trusted_only_for)(request.api_key):
        return deployment
    meter.trusted_only = True
    trusted = await sync_to_async(trusted_deployment_for)(model)
    if trusted is None:
        raise service_unavailable(
            f"The model '{model.model_id}' runs only on community (hosts') nodes right now, and this API key or "
            "its account is set to trusted nodes only. Retry later, or allow community nodes for this key.",
            code="no_trusted_capacity",
        )
    return trusted


def _priority(api_key: ApiKey) -> int:
    return PRIORITY_BY_TIER.get(api_key.priority, PRIORITY_BY_TIER[ApiKey.Priority.STANDARD])


def _max_tokens(
    params: GenerationRequest, model: CatalogModel, *, longest_prompt: int, choices: int, param: str
) -> int:
    """Each choice's ``max_tokens``: the client's, within the context and the per-request cap on
    generated tokens (400 naming the param otherwise); by default the room left in the context,
    within that cap."""
    room = model.context_length - longest_prompt
    if room < (params.max_tokens or 1):
        raise invalid_request(
            f"This model's maximum context length is {model.context_length} tokens; your prompt takes "
            f"{longest_prompt} and you asked for {params.max_tokens or 1} more. Shorten the prompt or lower "
            "max_tokens.",
            param=param,
            code="context_length_exceeded",
        )
    cap = settings.MAX_GENERATED_TOKENS_PER_REQUEST
    if params.max_tokens is None:
        return max(min(room, cap // choices), 1)
    if choices * params.max_tokens > cap:
        factors = f"n ({params.n})" if choices == params.n else f"n ({params.n}) x {choices // params.n} prompts"
        raise invalid_request(
            f"This request may generate up to {factors} x max_tokens ({params.max_tokens}) = "
            f"{choices * params.max_tokens} tokens; at most {cap} are allowed per request. Lower max_tokens "
            f"(at most {max(cap // choices, 1)} here) or n, or split the request.",
            param="max_tokens",
        )
    return params.max_tokens


async def _dispatch(
    request,
    meter: UsageMeter,
    params: GenerationRequest,
    *,
    prompt: str,
    prompts: list[str],
    prompt_tokens: int,
    longest_prompt: int,
    **job_fields,
):
    """Resolve the model, check access, context and size, admit the request, and hand the job to
    a GPU worker.

    ``params`` is a validated ChatRequest or CompletionRequest; ``job_fields`` go into the job.
    Returns the started call and the model.
    """
    meter.stream = params.stream
    model, deployment = await _resolve(request, meter, params.model, Task.CHAT)
    meter.prompt_tokens = prompt_tokens
    check_engine_support(params, deployment.engine)
    n = params.n * max(len(prompts), 1)
    max_tokens = _max_tokens(
        params, model, longest_prompt=longest_prompt, choices=n, param="prompt" if prompts else "messages"
    )
    job = GenerationJob(
        request_id=request.request_id,
        model=model.model_id,
        parameters_billion=float(model.parameters_billion),
        gpu_profile=deployment.gpu_profile,
        prompt=prompt,
        prompts=prompts,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        max_tokens_given=params.max_tokens is not None,
        temperature=params.temperature,
        top_p=params.top_p,
        n=n,
        stop=params.stop,
        # A seed even when the client gave none: the text stays random per request, and a worker
        # taking over from a dead one can reproduce it exactly.
        seed=params.seed if params.seed is not None else secrets.randbits(63),
        seed_given=params.seed is not None,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        logit_bias=params.logit_bias,
        **job_fields,
    )
    # Before the job is queued: the worst case of every choice together is reserved.
    await meter.admit(model, prompt_tokens=prompt_tokens, max_tokens=n * max_tokens)
    call = InferenceCall(meter, deployment, job, priority=_priority(request.api_key), stream=params.stream)
    await _submit(call)
    return call, model


async def _submit(call) -> None:
    """Queue the call and wait for a node to take it; a client gone meanwhile takes it off the queue."""
    try:
        await call.submit()
    except asyncio.CancelledError:
        await request_threads.shield(call.cancel())
        raise


async def _respond(completion: CompletionResponse, stream: bool):
    meter = completion.call.meter
    if stream:
        response = StreamingHttpResponse(completion.stream(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    else:
        response = JsonResponse(await completion.collect())
    return _with_billing_headers(response, meter)


def _with_billing_headers(response, meter: UsageMeter):
    """The token rate-limit headers, and on a whole (not streamed) answer its cost in USD."""
    if meter.cost is not None and not isinstance(response, StreamingHttpResponse):
        response["x-request-cost"] = f"{meter.cost:f}"
    for name, value in meter.headers().items():
        response[name] = value
    return response


@api_key_required(ApiKey.Scope.INFERENCE, methods=("POST",))
async def chat_completions(request):
    meter = UsageMeter(request, endpoint="chat.completions")
    async with meter.failures():
        chat, prompt, prompt_tokens = await read_body(request, "chat")
        call, model = await _dispatch(
            request,
            meter,
            chat,
            prompt=prompt,
            prompts=[],
            prompt_tokens=prompt_tokens,
            longest_prompt=prompt_tokens,
            messages=chat.messages,
            tools=chat.tools,
            tool_choice=chat.tool_choice,
            parallel_tool_calls=chat.parallel_tool_calls,
            response_format=chat.response_format,
            logprobs=chat.logprobs,
            top_logprobs=chat.top_logprobs,
        )
    return await _respond(ChatCompletion(call, model.model_id, include_usage=chat.include_usage), chat.stream)


@api_key_required(ApiKey.Scope.INFERENCE, methods=("POST",))
async def completions(request):
    meter = UsageMeter(request, endpoint="completions")
    async with meter.failures():
        params, counts = await read_body(request, "completion")
        call, model = await _dispatch(
            request,
            meter,
            params,
            prompt=params.prompts[0],
            prompts=params.prompts,
            prompt_tokens=sum(counts),
            longest_prompt=max(counts),
            logprobs=params.logprobs is not None,
            top_logprobs=params.logprobs,
        )
    # Choice i answers prompt i // n; with echo it starts with that prompt.
    echoed = [params.prompts[i // params.n] if params.echo else "" for i in range(call.job.n)]
    completion = TextCompletion(call, model.model_id, include_usage=params.include_usage, echoed=echoed)
    return await _respond(completion, params.stream)


@api_key_required(ApiKey.Scope.INFERENCE, methods=("POST",))
async def embeddings(request):
    meter = UsageMeter(request, endpoint="embeddings")
    async with meter.failures():
        params, counts = await read_body(request, "embedding")
        model, deployment = await _resolve(request, meter, params.model, Task.EMBEDDING)
        meter.prompt_tokens = sum(counts)
        for index, count in enumerate(counts):
            if count > model.context_length:
                raise invalid_request(
                    f"This model's maximum context length is {model.context_length} tokens; input {index} takes "
                    f"{count}. Shorten or split it.",
                    param="input" if len(counts) == 1 else f"input[{index}]",
                    code="context_length_exceeded",
                )
        await meter.admit(model, prompt_tokens=meter.prompt_tokens, max_tokens=0)
        job = EmbeddingJob(
            request_id=request.request_id,
            model=model.model_id,
            texts=params.inputs,
        )
        call = EmbeddingCall(meter, deployment, job, priority=_priority(request.api_key))
        await _submit(call)
        try:
            vectors, usage = await call.result()
        except asyncio.CancelledError:
            await request_threads.shield(call.cancel())
            raise
        dimensions = len(vectors[0]) // 4
        if params.dimensions is not None and params.dimensions != dimensions:
            raise invalid_request(
                f"The model '{model.model_id}' gives {dimensions}-dimensional embeddings and cannot shorten them: "
                f"leave out 'dimensions' or set it to {dimensions}.",
                param="dimensions",
            )
        await request_threads.shield(meter.record(200))
    if params.encoding_format == "base64":
        encoded = [base64.b64encode(vector).decode("ascii") for vector in vectors]
    else:
        encoded = [unpack_floats(vector) for vector in vectors]
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
    prompt_tokens = usage["prompt_tokens"]
    response = JsonResponse(
        {
            "object": "list",
            "data": data,
            "model": model.model_id,
            "usage": meter.usage({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}),
        }
    )
    return _with_billing_headers(response, meter)
