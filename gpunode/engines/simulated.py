"""The simulated engine: deterministic text from a seeded generator, paced like a GPU.

Text depends only on the model, prompt, seed and choice index when ``temperature`` is 0 or a
``seed`` is given, so a streamed and a non-streamed request produce the same text. Pacing follows
the deployment's GPU profile and the model's size (time to first token, then tokens per second);
``SIMULATED_ENGINE_INSTANT`` turns pacing off for benchmarks of the gateway itself.

Embeddings are pseudo-embeddings: each word has a fixed random direction (seeded by the model and
the word), a text's vector is the L2-normalised sum of its words' directions. Texts that share
words are close, so a simulated embedding model behaves plausibly in a search demo.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import sys
from array import array
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache

from gpunode.engines import structured
from gpunode.engines.base import EngineRefused, GenerationJob, TokenEvent
from gpunode.environment import instant_pacing
from nodeprotocol.gpus import GPU_PROFILES
from nodeprotocol.tokens import TOKEN_RE, count_tokens

VOCABULARY = (
    "the a model token GPU cloud request answer compute memory kernel tensor batch layer cache "
    "latency throughput stream queue worker node cluster sample prompt context vector matrix "
    "inference training weight gradient precision quantized parallel schedule replica deploy "
    "serve fast reliable simple open efficient careful clear useful small large bright quiet "
    "is are was runs holds moves builds reads writes keeps shows makes takes gives finds "
    "and or but so then with for from into over under across between within without"
).split()
MIN_LENGTH, MAX_LENGTH = 12, 96
EMBEDDING_DIMENSIONS = 384


def _rng(job: GenerationJob, index: int) -> random.Random:
    if job.temperature == 0 or job.seed is not None:
        # Greedy decoding (temperature 0) ignores the seed; otherwise the seed fixes the sample.
        seed = None if job.temperature == 0 else job.seed
        material = f"{job.model}\x00{job.prompt_for(index)}\x00{seed}\x00{index}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))
    return random.Random()


class Sampler:
    """Draws words from the vocabulary (cut by top_p) and says how likely each draw was.

    Without penalties or logit_bias every word is equally likely (``rng.choice``); with them each
    word's logit is its bias (token id k is ``VOCABULARY[k]``) minus the presence penalty if it
    appeared in this choice and the frequency penalty times its count, divided by the temperature.
    The log probabilities reported are those of the distribution actually sampled from.
    """

    def __init__(self, job: GenerationJob, rng: random.Random) -> None:
        self.rng = rng
        self.vocabulary = VOCABULARY[: max(1, round(len(VOCABULARY) * job.top_p))]
        self.bias = [float((job.logit_bias or {}).get(str(k), 0.0)) for k in range(len(self.vocabulary))]
        self.presence = job.presence_penalty or 0.0
        self.frequency = job.frequency_penalty or 0.0
        self.weighted = bool(self.presence or self.frequency or any(self.bias))
        self.temperature = max(job.temperature, 0.05)
        self.counts = [0] * len(self.vocabulary)

    def _logits(self) -> list[float]:
        return [
            (bias - (self.presence if count else 0.0) - self.frequency * count) / self.temperature
            for bias, count in zip(self.bias, self.counts, strict=True)
        ]

    def draw(self) -> tuple[int, list[float]]:
        """A word's index, and every word's log probability."""
        if not self.weighted:
            word = self.rng.choice(range(len(self.vocabulary)))
            logprobs = [-math.log(len(self.vocabulary))] * len(self.vocabulary)
        else:
            logits = self._logits()
            top = max(logits)
            weights = [math.exp(logit - top) for logit in logits]
            total = sum(weights)
            logprobs = [logit - top - math.log(total) for logit in logits]
            word = self.rng.choices(range(len(self.vocabulary)), weights)[0]
        self.counts[word] += 1
        return word, logprobs


def _shape(word: str, first: bool, capital: bool) -> str:
    if capital:
        word = word[0].upper() + word[1:]
    return word if first else f" {word}"


def _tokens(rng: random.Random, job: GenerationJob) -> Iterator[tuple[str, float, list]]:
    """An endless run of sentences as tokens: 'Word', ' word', …, '.', ' Word', …, each with its log
    probability and the ``top_logprobs`` most likely alternatives."""
    sampler = Sampler(job, rng)
    alternatives = job.top_logprobs or 0
    first = True
    while True:
        for position in range(rng.randint(5, 14)):
            word, logprobs = sampler.draw()
            token = _shape(sampler.vocabulary[word], first, position == 0)
            top = []
            if alternatives:
                ranked = sorted(range(len(logprobs)), key=lambda k: (-logprobs[k], k != word, k))[:alternatives]
                top = [[_shape(sampler.vocabulary[k], first, position == 0), logprobs[k]] for k in ranked]
            yield token, logprobs[word], top
            first = False
        # The sentence's length was drawn at its start: its full stop is certain.
        yield ".", 0.0, [[".", 0.0]] if alternatives else []


def _wants_tools(job: GenerationJob) -> bool:
    """Whether a choice answers with tool calls: when required or named, and under "auto" unless
    the conversation's last message is a tool's result (then the model answers in words)."""
    if not job.tools or job.tool_choice == "none":
        return False
    if job.tool_choice == "required" or isinstance(job.tool_choice, dict):
        return True
    return not job.messages or job.messages[-1].get("role") != "tool"


def _tool_calls(job: GenerationJob, rng: random.Random, index: int) -> Iterator[TokenEvent]:
    """One call (two distinct tools at times, when several are offered and parallel calls allowed),
    its arguments generated from the tool's parameters schema and sent in pieces."""
    tools = [t["function"] for t in job.tools]
    if isinstance(job.tool_choice, dict):
        chosen = [next(t for t in tools if t["name"] == job.tool_choice["function"]["name"])]
    elif len(tools) > 1 and job.parallel_tool_calls is not False and rng.random() < 0.5:
        chosen = rng.sample(tools, 2)
    else:
        chosen = [rng.choice(tools)]
    for number, tool in enumerate(chosen):
        schema = tool.get("parameters") or {"type": "object", "properties": {}}
        structured.check(schema)
        arguments = json.dumps(structured.generate_value(schema, rng))
        call_id = f"call_{rng.getrandbits(96):024x}"
        yield TokenEvent(index, "", tool_call={"index": number, "id": call_id, "name": tool["name"], "arguments": ""})
        for piece in structured.json_tokens(arguments):
            yield TokenEvent(index, "", tool_call={"index": number, "arguments": piece})
    yield TokenEvent(index, None, "tool_calls")


def _structured_text(job: GenerationJob, rng: random.Random, index: int) -> Iterator[TokenEvent]:
    """A JSON answer: an object for ``json_object``, a value of the schema for ``json_schema``."""
    if job.response_format["type"] == "json_schema":
        schema = job.response_format["json_schema"].get("schema") or {"type": "object"}
        structured.check(schema)
    else:
        schema = {"type": "object"}
    text = json.dumps(structured.generate_value(schema, rng))
    for token in structured.json_tokens(text):
        # The value was drawn whole: rendering it token by token is certain.
        logprobs = [{"token": token, "logprob": 0.0, "top": [[token, 0.0]] if job.top_logprobs else []}]
        yield TokenEvent(index, token, logprobs=logprobs if job.logprobs else None)
    yield TokenEvent(index, None)


def _text(job: GenerationJob, rng: random.Random, index: int) -> Iterator[TokenEvent]:
    """Sentences, ending at the first full stop after a drawn length."""
    length = rng.randint(MIN_LENGTH, MAX_LENGTH)
    for produced, (token, logprob, top) in enumerate(_tokens(rng, job), start=1):
        logprobs = [{"token": token, "logprob": logprob, "top": top}] if job.logprobs else None
        yield TokenEvent(index, token, logprobs=logprobs)
        if produced >= length and token == ".":
            yield TokenEvent(index, None)
            return


def _choice(job: GenerationJob, index: int) -> Iterator[TokenEvent]:
    rng = _rng(job, index)
    if _wants_tools(job):
        return _tool_calls(job, rng, index)
    if job.response_format and job.response_format.get("type") in ("json_object", "json_schema"):
        return _structured_text(job, rng, index)
    return _text(job, rng, index)


@lru_cache(maxsize=65536)
def _direction(model: str, word: str, dimensions: int) -> array:
    """A fixed pseudo-random direction for ``word``: signed 16-bit components from SHAKE-256."""
    components = array("h", hashlib.shake_256(f"{model}\x00{word}".encode()).digest(2 * dimensions))
    if sys.byteorder == "big":  # the same vectors on every worker, whatever its CPU
        components.byteswap()
    return components


def pseudo_embedding(text: str, model: str = "", dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The L2-normalised sum of the directions of ``text``'s words (of the whole text if it has none)."""
    words = [w.lower() for w in TOKEN_RE.findall(text)] or [text]
    vector = list(_direction(model, words[0], dimensions))
    for word in words[1:]:
        vector = [a + b for a, b in zip(vector, _direction(model, word, dimensions), strict=True)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class SimulatedEngine:
    name = "simulated"
    # The same job (with a seed) gives the same text: another worker can take over mid-stream.
    deterministic = True

    def __init__(self, config: dict | None = None) -> None:
        # Nothing to configure except, for embeddings, {"dimensions": N} (default 384).
        self.dimensions = int((config or {}).get("dimensions", EMBEDDING_DIMENSIONS))

    async def prepare(self) -> None:
        """Nothing to load."""

    async def embed(self, texts: list[str], *, model: str = "") -> tuple[list[list[float]], int]:
        vectors = [pseudo_embedding(text, model, self.dimensions) for text in texts]
        return vectors, sum(count_tokens(text) for text in texts)

    async def generate(self, job: GenerationJob) -> AsyncIterator[TokenEvent]:
        profile = GPU_PROFILES.get(job.gpu_profile) or GPU_PROFILES["A100-80GB"]
        instant = instant_pacing()
        unknown = sorted((k for k in job.logit_bias or {} if int(k) >= len(VOCABULARY)), key=int)
        if unknown:
            raise EngineRefused(
                f"'logit_bias' names token id {unknown[0]}, which the simulated engine's vocabulary does not have "
                f"(its token ids are 0 to {len(VOCABULARY) - 1})."
            )
        try:
            choices = [(index, _choice(job, index)) for index in range(job.n)]
        except structured.UnsupportedSchema as error:
            raise EngineRefused(f"The simulated engine cannot serve this request: {error}.") from None
        if not instant:
            await asyncio.sleep(profile.time_to_first_token(job.parameters_billion, job.prompt_tokens))
        interval = 1.0 / profile.tokens_per_second(job.parameters_billion)
        chars = [0] * job.n
        replay = job.fast_forward or [0] * job.n
        while len(job.finished) < job.n:
            for index, events in choices:
                if index in job.finished:
                    continue
                try:
                    event = next(events)
                except structured.UnsupportedSchema as error:
                    raise EngineRefused(f"The simulated engine cannot serve this request: {error}.") from None
                if event.text is None:
                    job.finished.add(index)
                else:
                    chars[index] += len(event.text)
                yield event
            # Text the client already has (after a worker failure) is produced at once.
            catching_up = all(chars[i] < replay[i] for i in range(job.n) if i not in job.finished)
            if not instant and not catching_up:
                await asyncio.sleep(interval)
