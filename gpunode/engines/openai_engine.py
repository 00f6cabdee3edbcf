"""The "openai" engine: forwards to an OpenAI-compatible server on the node.

vLLM, SGLang, TGI, the llama.cpp server and Ollama all speak ``/v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings``. The deployment's ``engine_config`` says where:

    {"base_url": "http://127.0.0.1:8001/v1",   # required
     "model": "meta-llama/Llama-3.1-8B-Instruct",  # the upstream's model name; default: ours
     "api_key_env": "VLLM_API_KEY",              # the upstream's key: a variable on the node
     "timeout": 120}                             # seconds the upstream may stay silent

Generation always streams from the upstream (``stream_options.include_usage``), so the platform
relays tokens as they come whether or not its own client streams, and reports the upstream's own
token counts. Every failure of the upstream (unreachable, an HTTP error, a stream cut short)
raises :class:`UpstreamError`, which the worker turns into an OpenAI-shaped error for the client.
The key itself never leaves the node: ``api_key_env`` names a variable of the node's environment
that its operator allowed (``gpunode.environment``). Nothing here logs or repeats the key.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from functools import cache

import certifi
import httpx

from gpunode.engines.base import EngineUnavailable, GenerationJob, TokenEvent
from gpunode.environment import SecretRefused, engine_secret
from nodeprotocol.tokens import count_tokens

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0  # an upstream under load may take long to first token
CONNECT_TIMEOUT = 5.0
FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls"}
# Upstream statuses relayed as they are: the request's own fault, said by the upstream. Others
# (401/403: our credentials; 5xx and the rest: the upstream's fault) are a 502 from us.
RELAYED_STATUSES = {400: "upstream_invalid_request", 404: "upstream_not_found", 413: "upstream_request_too_large",
                    422: "upstream_invalid_request", 429: "upstream_rate_limited"}  # fmt: skip
ERROR_BODY_LIMIT = 500  # characters of an upstream's error body quoted in our message


class UpstreamError(EngineUnavailable):
    """The upstream server failed: unreachable, an HTTP error, a broken or malformed stream."""

    code = "upstream_error"


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (HTTP 400, 404, 413, 422 or 429): relayed with its
    status, its message prefixed with what failed."""

    code = "upstream_invalid_request"
    status = 400

    def __init__(self, message: str, status: int = 400, code: str = "upstream_invalid_request") -> None:
        super().__init__(message)
        self.status, self.code = status, code


@cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client: building one (loading the CA bundle) takes ~30 ms."""
    return ssl.create_default_context(cafile=certifi.where())


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


def _error_detail(response: httpx.Response) -> str:
    """The upstream's error message: ``error.message`` of an OpenAI-shaped body (with its
    ``param``), else the text."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:ERROR_BODY_LIMIT]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        param = f" (param: {str(error['param'])[:100]})" if isinstance(error.get("param"), str) else ""
        return f"{str(error['message'])[:ERROR_BODY_LIMIT]}{param}"
    if isinstance(error, str):  # TGI and some others: {"error": "...", "error_type": "..."}
        return error[:ERROR_BODY_LIMIT]
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:ERROR_BODY_LIMIT]
    return text[:ERROR_BODY_LIMIT]


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent-event stream (multi-line data joined by newlines)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # Comments (":"), "event:", "id:" and "retry:" lines carry nothing we use.
    if data:
        yield "\n".join(data)


def _logprobs(logprobs: object, chat: bool) -> list[dict] | None:
    """An upstream chunk's log probabilities as the protocol's entries (chat's ``content`` list, or
    /v1/completions' parallel lists)."""
    if not isinstance(logprobs, dict):
        return None
    try:
        if chat:
            return [
                {
                    "token": str(e["token"]),
                    "logprob": float(e["logprob"]),
                    "top": [[str(t["token"]), float(t["logprob"])] for t in e.get("top_logprobs") or []],
                }
                for e in logprobs.get("content") or []
            ] or None
        tops = logprobs.get("top_logprobs") or []
        pairs = zip(logprobs.get("tokens") or [], logprobs.get("token_logprobs") or [], strict=False)
        return [
            {
                "token": str(token),
                "logprob": float(logprob if logprob is not None else 0.0),
                "top": [[str(t), float(lp)] for t, lp in (tops[i] or {}).items()] if i < len(tops) else [],
            }
            for i, (token, logprob) in enumerate(pairs)
        ] or None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UpstreamError("The upstream server sent malformed log probabilities.") from None


def _tool_call_piece(call: object) -> dict:
    """A ``delta.tool_calls`` item as the protocol's tool-call piece."""
    if not isinstance(call, dict) or not isinstance(call.get("index", 0), int):
        raise UpstreamError("The upstream server sent a malformed tool call.")
    function = call.get("function") or {}
    piece = {"index": call.get("index", 0), "arguments": str(function.get("arguments") or "")}
    if call.get("id"):
        piece["id"] = str(call["id"])
    if function.get("name"):
        piece["name"] = str(function["name"])
    return piece


class OpenAIEngine:
    name = "openai"
    # A real model's sampling can't be replayed: a stream cut by a dead worker can't be continued.
    deterministic = False
    # The upstream stops at max_tokens by its own tokenizer, and reports the usage last.
    applies_max_tokens = True

    def __init__(self, config: dict) -> None:
        base_url = config.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise EngineUnavailable(
                "The openai engine needs engine_config.base_url, the URL of an OpenAI-compatible server "
                'including its /v1, e.g. {"base_url": "http://127.0.0.1:8001/v1"}.'
            )
        self.base_url = base_url.rstrip("/")
        self.model = config.get("model") or ""
        if config.get("api_key"):
            raise EngineUnavailable(
                "engine_config.api_key is not accepted: the platform never sends secrets to nodes. Put the key in an "
                "environment variable on the node and name it in engine_config.api_key_env."
            )
        self._api_key_env = config.get("api_key_env") or ""
        read = float(config.get("timeout", DEFAULT_TIMEOUT))
        self.timeout = httpx.Timeout(read, connect=min(CONNECT_TIMEOUT, read))

    def __repr__(self) -> str:  # never the key
        return f"<OpenAIEngine {self.base_url} model={self.model or '(per request)'}>"

    def _headers(self) -> dict[str, str]:
        if not self._api_key_env:
            return {}
        try:
            key = engine_secret(self._api_key_env)
        except SecretRefused as refusal:
            raise EngineUnavailable(str(refusal)) from None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _client(self) -> httpx.AsyncClient:
        # A client per call: workers run each task in an event loop of its own, and a client's
        # connections belong to the loop that opened them. The upstream is on the node or its
        # private network, so proxies from the environment are not used.
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers(),
            timeout=self.timeout,
            verify=_ssl_context(),
            trust_env=False,
        )

    async def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 400:
            return
        await response.aread()
        detail = _error_detail(response)
        status = response.status_code
        if status in (401, 403):
            raise UpstreamError(
                f"The upstream server at {self.base_url} refused our credentials (HTTP {status}) for {what}: "
                "set engine_config.api_key_env to a node variable holding its API key."
            )
        if status in RELAYED_STATUSES:
            raise UpstreamRejected(
                f"The upstream model server rejected the request (HTTP {status}): {detail}",
                404 if status == 404 else 429 if status == 429 else 413 if status == 413 else 400,
                RELAYED_STATUSES[status],
            )
        raise UpstreamError(f"The upstream server at {self.base_url} answered {what} with HTTP {status}: {detail}")

    def _unreachable(self, error: httpx.HTTPError, what: str) -> UpstreamError:
        if isinstance(error, httpx.TimeoutException):
            return UpstreamError(
                f"The upstream server at {self.base_url} did not answer {what} in time ({_describe(error)})."
            )
        if isinstance(error, httpx.ConnectError):
            return UpstreamError(
                f"The upstream server at {self.base_url} is unreachable ({_describe(error)}): start the "
                "OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama) or fix engine_config.base_url."
            )
        return UpstreamError(f"The connection to the upstream server at {self.base_url} failed during {what}: "
                             f"{_describe(error)}.")  # fmt: skip

    async def prepare(self) -> None:
        """Check that the upstream answers ``GET /models`` (and accepts our key)."""
        try:
            async with self._client() as client:
                response = await client.get("/models")
                await self._raise_for_status(response, "GET /models")
        except httpx.HTTPError as error:
            raise self._unreachable(error, "GET /models") from None
        if self.model:
            try:
                served = {m.get("id") for m in response.json().get("data", [])}
            except (ValueError, AttributeError):
                served = set()
            if served and self.model not in served:
                # Not fatal: servers such as Ollama also answer to names they do not list.
                logger.warning("The upstream %s does not list the model %s (it lists %s)", self.base_url,
                               self.model, ", ".join(sorted(map(str, served))))  # fmt: skip

    def _generation_body(self, job: GenerationJob) -> tuple[str, dict]:
        body: dict = {
            "model": self.model or job.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": job.temperature,
            "top_p": job.top_p,
        }
        if job.prompts:
            path = "/completions"
            body["prompt"] = job.prompts
            body["n"] = job.n // len(job.prompts)
        else:
            path = "/chat/completions"
            body["messages"] = job.messages or [{"role": "user", "content": job.prompt}]
            body["n"] = job.n
        if job.max_tokens_given:
            body["max_tokens"] = job.max_tokens
        if job.stop:
            body["stop"] = job.stop
        if job.seed is not None and job.seed_given:
            body["seed"] = job.seed
        # Everything else the client asked for goes through as it asked; the upstream honours it
        # or says it cannot (a 400 relayed to the client).
        for name in ("presence_penalty", "frequency_penalty", "logit_bias"):
            if getattr(job, name) is not None:
                body[name] = getattr(job, name)
        if job.prompts:
            if job.logprobs:
                body["logprobs"] = job.top_logprobs or 0
        else:
            for name in ("tool_choice", "parallel_tool_calls", "response_format", "top_logprobs"):
                if getattr(job, name) is not None:
                    body[name] = getattr(job, name)
            if job.tools:
                body["tools"] = job.tools
            if job.logprobs:
                body["logprobs"] = True
        return path, body

    async def generate(self, job: GenerationJob) -> AsyncIterator[TokenEvent]:
        """Stream the upstream's reply as token events; sets ``job.reported_usage`` from its usage.

        The last choice's end is held back until the stream is over: the usage chunk follows the
        finish reasons, and the runner stops reading once every choice has ended.
        """
        path, body = self._generation_body(job)
        chat = not job.prompts
        what = f"POST {path}"
        ended: set[int] = set()
        held: TokenEvent | None = None
        complete = False
        try:
            async with self._client() as client, client.stream("POST", path, json=body) as response:
                await self._raise_for_status(response, what)
                async for payload in _sse_data(response):
                    if payload.strip() == "[DONE]":
                        complete = True
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise UpstreamError(
                            f"The upstream server at {self.base_url} sent a malformed event: {payload[:200]!r}"
                        ) from None
                    if not isinstance(chunk, dict):
                        continue
                    if chunk.get("error"):
                        error = chunk["error"]
                        message = error.get("message") if isinstance(error, dict) else str(error)
                        raise UpstreamError(f"The upstream model server failed mid-reply: {message}")
                    if isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                        job.reported_usage = {
                            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                            "completion_tokens": int(usage.get("completion_tokens") or 0),
                        }
                    for choice in chunk.get("choices") or []:
                        index = choice.get("index", 0)
                        if not isinstance(index, int) or not 0 <= index < job.n or index in ended:
                            continue
                        delta = (choice.get("delta") or {}) if chat else {}
                        text = delta.get("content") if chat else choice.get("text")
                        logprobs = _logprobs(choice.get("logprobs"), chat) if job.logprobs else None
                        if text or logprobs:
                            yield TokenEvent(index, text or "", logprobs=logprobs)
                        for call in delta.get("tool_calls") or [] if job.tools else []:
                            yield TokenEvent(index, "", tool_call=_tool_call_piece(call))
                        reason = choice.get("finish_reason")
                        if reason:
                            ended.add(index)
                            event = TokenEvent(index, None, reason if reason in FINISH_REASONS else "stop")
                            if len(ended | job.finished) < job.n:
                                yield event
                            else:
                                held = event
        except httpx.HTTPError as error:
            if held is None:
                raise self._unreachable(error, what) from None
            # Every choice had ended: only the usage (counted by the runner instead) was lost.
            logger.warning("The upstream %s broke off after the reply: %s", self.base_url, _describe(error))
        if not complete and len(ended | job.finished) < job.n:
            raise UpstreamError(
                f"The upstream server at {self.base_url} closed the stream before the reply was complete."
            )
        if held is not None:
            yield held

    async def embed(self, texts: list[str], *, model: str = "") -> tuple[list[list[float]], int]:
        what = "POST /embeddings"
        body = {"model": self.model or model, "input": texts, "encoding_format": "float"}
        try:
            async with self._client() as client:
                response = await client.post("/embeddings", json=body)
                await self._raise_for_status(response, what)
        except httpx.HTTPError as error:
            raise self._unreachable(error, what) from None
        try:
            reply = response.json()
            items = sorted(reply["data"], key=lambda item: item.get("index", 0))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamError(f"The upstream server at {self.base_url} sent a malformed embeddings reply.") from None
        if len(vectors) != len(texts):
            raise UpstreamError(
                f"The upstream server at {self.base_url} returned {len(vectors)} embeddings for {len(texts)} inputs."
            )
        usage = reply.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        if not isinstance(prompt_tokens, int):
            prompt_tokens = sum(count_tokens(text) for text in texts)
        return vectors, prompt_tokens
