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
import math
import random
import sys
from array import array
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache

from gpunode.engines.base import GenerationJob, TokenEvent
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


def _tokens(rng: random.Random, top_p: float) -> Iterator[str]:
    """An endless run of sentences as tokens: 'Word', ' word', …, '.', ' Word', …"""
    vocabulary = VOCABULARY[: max(1, round(len(VOCABULARY) * top_p))]
    first = True
    while True:
        for position in range(rng.randint(5, 14)):
            word = rng.choice(vocabulary)
            if position == 0:
                word = word[0].upper() + word[1:]
            yield word if first else f" {word}"
            first = False
        yield "."


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
        # Each choice ends naturally at the first full stop after its drawn length.
        choices = []
        for index in range(job.n):
            rng = _rng(job, index)
            choices.append((index, rng.randint(MIN_LENGTH, MAX_LENGTH), _tokens(rng, job.top_p)))
        if not instant:
            await asyncio.sleep(profile.time_to_first_token(job.parameters_billion, job.prompt_tokens))
        interval = 1.0 / profile.tokens_per_second(job.parameters_billion)
        produced = [0] * job.n
        chars = [0] * job.n
        replay = job.fast_forward or [0] * job.n
        last = [""] * job.n
        while len(job.finished) < job.n:
            for index, length, tokens in choices:
                if index in job.finished:
                    continue
                if produced[index] >= length and last[index] == ".":
                    job.finished.add(index)
                    yield TokenEvent(index, None)
                    continue
                last[index] = next(tokens)
                produced[index] += 1
                chars[index] += len(last[index])
                yield TokenEvent(index, last[index])
            # Text the client already has (after a worker failure) is produced at once.
            catching_up = all(chars[i] < replay[i] for i in range(job.n) if i not in job.finished)
            if not instant and not catching_up:
                await asyncio.sleep(interval)
