"""Request metrics, added up across every web process in Redis.

The request path calls the small functions at the bottom of this module where a figure is
already known (the meter, the call, the transport). Each call only adds to this process's
in-memory deltas under a lock; a daemon thread adds them to Redis once a second
(``HINCRBYFLOAT`` into one hash per metric, in one pipeline), and at exit. A scrape of any web
process reads the hashes (:class:`AggregatedCollector`), so ``/metrics`` describes the platform,
not the process or the machine that answered it. If Redis is unreachable the deltas wait in
memory and go with the next flush.

Label values are bounded: a model label holds a catalog model id (``unknown`` for a request that
never resolved to one), never what a client typed, and endpoints and statuses are fixed sets.
"""

from __future__ import annotations

import atexit
import bisect
import functools
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from nodeprotocol.tokens import count_tokens

logger = logging.getLogger(__name__)

PREFIX = "gpucloud:"
REDIS_KEY = "gpucloud:metrics:{name}"
FLUSH_SECONDS = 1.0
UNKNOWN_MODEL = "unknown"
GENERATION_ENDPOINTS = frozenset({"chat.completions", "completions"})

# vLLM's buckets, with finer ones at the low end (the simulated engine is fast).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip


@dataclass(frozen=True)
class Definition:
    """One aggregated metric: a counter, or a histogram when it has buckets."""

    name: str  # without the prefix; a counter's without ``_total``
    documentation: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def full_name(self) -> str:
        return PREFIX + self.name

    @property
    def redis_key(self) -> str:
        return REDIS_KEY.format(name=self.name)


REQUESTS = Definition(
    "requests", "Requests to the OpenAI API by model, endpoint and HTTP status.", ("model_name", "endpoint", "status")
)
REQUEST_SUCCESS = Definition(
    "request_success", "Requests answered 200, by model and endpoint.", ("model_name", "endpoint")
)
PROMPT_TOKENS = Definition("prompt_tokens", "Prompt (input) tokens of the requests billed.", ("model_name",))
GENERATION_TOKENS = Definition(
    "generation_tokens", "Generated (output) tokens of the requests billed.", ("model_name",)
)
SPEND = Definition("spend_usd", "What requests were charged, in USD.", ("model_name",))
TIME_TO_FIRST_TOKEN = Definition(
    "time_to_first_token_seconds",
    "From the request's arrival to its first output reaching the web process (chat and completions).",
    ("model_name",),
    TTFT_BUCKETS,
)
INTER_TOKEN_LATENCY = Definition(
    "inter_token_latency_seconds",
    "Time between output tokens as they reach the web process (a batch's gap spread over its tokens).",
    ("model_name",),
    ITL_BUCKETS,
)
E2E_LATENCY = Definition(
    "e2e_request_latency_seconds",
    "From the request's arrival to its end, for requests handed to the job queue.",
    ("model_name", "endpoint"),
    LATENCY_BUCKETS,
)
QUEUE_TIME = Definition(
    "request_queue_time_seconds",
    "Time a request waited in its deployment's queue until a GPU node took it (each dispatch).",
    ("model_name",),
    TTFT_BUCKETS,
)
DEFINITIONS = (
    REQUESTS,
    REQUEST_SUCCESS,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    SPEND,
    TIME_TO_FIRST_TOKEN,
    INTER_TOKEN_LATENCY,
    E2E_LATENCY,
    QUEUE_TIME,
)


# --- This process's deltas ------------------------------------------------------------------------

# A histogram's hash fields per label set: one per bucket (not cumulative) and ``sum``.
SUM_FIELD = "sum"


@functools.lru_cache(maxsize=4096)
def _field(values: tuple[str, ...], part: str | None = None) -> str:
    encoded = json.dumps(list(values))
    return encoded if part is None else f"{encoded}\t{part}"


@functools.cache
def _bounds(buckets: tuple[float, ...]) -> tuple[str, ...]:
    return (*map(floatToGoString, buckets), "+Inf")


def _bucket_of(buckets: tuple[float, ...], value: float) -> str:
    """The (upper bound of the) bucket ``value`` falls in: the first bound at or above it."""
    return _bounds(buckets)[bisect.bisect_left(buckets, value)]


class Deltas:
    """What this process observed since its last flush, and the thread that flushes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], float] = {}  # (redis key, field) -> increment
        self._flusher: threading.Thread | None = None
        self._flush_lock = threading.Lock()

    def add(self, definition: Definition, values: tuple[str, ...], amount: float = 1.0) -> None:
        key = (definition.redis_key, _field(values))
        with self._lock:
            self._pending[key] = self._pending.get(key, 0.0) + amount
        self._ensure_flusher()

    def observe(self, definition: Definition, values: tuple[str, ...], value: float, times: int = 1) -> None:
        """``times`` observations of ``value``."""
        bucket = (definition.redis_key, _field(values, _bucket_of(definition.buckets, value)))
        total = (definition.redis_key, _field(values, SUM_FIELD))
        with self._lock:
            self._pending[bucket] = self._pending.get(bucket, 0.0) + times
            self._pending[total] = self._pending.get(total, 0.0) + value * times
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is not None and self._flusher.is_alive():
            return
        with self._lock:
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
                self._flusher.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> bool:
        """Add the pending deltas to Redis; on failure they stay pending. True when none are left."""
        from gpucloud.redis_client import get_redis

        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return True
            try:
                pipe = get_redis().pipeline(transaction=False)
                for (key, field), amount in pending.items():
                    pipe.hincrbyfloat(key, field, amount)
                pipe.execute()
                return True
            except Exception as error:  # Redis away: keep them for the next flush
                logger.warning("Could not flush metrics to Redis: %s", error)
                with self._lock:
                    for entry, amount in pending.items():
                        self._pending[entry] = self._pending.get(entry, 0.0) + amount
                return False


deltas = Deltas()
atexit.register(deltas.flush)


# --- Reading them back ----------------------------------------------------------------------------


def _decode(raw: dict) -> dict[str, float]:
    return {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in raw.items()}


def _histogram(definition: Definition, fields: dict[str, float]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(definition.full_name, definition.documentation, labels=definition.labels)
    series: dict[str, dict[str, float]] = {}
    for field, value in fields.items():
        labels, _, part = field.partition("\t")
        series.setdefault(labels, {})[part] = value
    for labels, parts in sorted(series.items()):
        cumulative, buckets = 0.0, []
        for bound in _bounds(definition.buckets):
            cumulative += parts.get(bound, 0.0)
            buckets.append((bound, cumulative))
        family.add_metric(json.loads(labels), buckets, parts.get(SUM_FIELD, 0.0))
    return family


def _counter(definition: Definition, fields: dict[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(definition.full_name, definition.documentation, labels=definition.labels)
    for labels, value in sorted(fields.items()):
        family.add_metric(json.loads(labels), value)
    return family


class AggregatedCollector:
    """The request metrics of every web process, as Redis holds them (this process's flushed first)."""

    def collect(self) -> Iterator[Metric]:
        from gpucloud.redis_client import get_redis

        deltas.flush()
        pipe = get_redis().pipeline(transaction=False)
        for definition in DEFINITIONS:
            pipe.hgetall(definition.redis_key)
        for definition, raw in zip(DEFINITIONS, pipe.execute(), strict=True):
            fields = _decode(raw)
            yield _histogram(definition, fields) if definition.buckets else _counter(definition, fields)


# --- What the request path calls ------------------------------------------------------------------

# Per request: when its last output arrived, and when its current dispatch was queued.
_last_output: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_queued_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_label(meter) -> str:
    """The catalog model id of a request, or ``unknown``: never a name a client typed."""
    model = getattr(meter, "model", None)
    return model.model_id if model is not None else UNKNOWN_MODEL


def output_arrived(meter, events: Iterable[dict]) -> None:
    """A batch of output events (``{"t": text, ...}``) reached the view: inter-token latency."""
    tokens = sum(count_tokens(event.get("t") or "") for event in events)
    if not tokens:
        return
    now = time.monotonic()
    previous = _last_output.get(meter)
    _last_output[meter] = now
    if previous is not None:
        # Tokens travel in batches (the node sends every 30 ms): the batch's gap, spread evenly.
        deltas.observe(INTER_TOKEN_LATENCY, (model_label(meter),), (now - previous) / tokens, times=tokens)


def enqueued(call) -> None:
    """A call's job went onto its deployment's queue (again, after a lost node)."""
    _queued_at[call] = time.monotonic()


def dispatched(call) -> None:
    """A GPU node took the call's job: the time it waited in the queue."""
    queued_at = _queued_at.pop(call, None)
    if queued_at is not None:
        deltas.observe(QUEUE_TIME, (model_label(call.meter),), time.monotonic() - queued_at)


def request_finished(meter, status_code: int) -> None:
    """A request ended with ``status_code`` (the meter is recording it): counts and latencies."""
    model, endpoint = model_label(meter), meter.endpoint
    deltas.add(REQUESTS, (model, endpoint, str(status_code)))
    if status_code == 200:
        deltas.add(REQUEST_SUCCESS, (model, endpoint))
    if meter.billable(status_code):
        deltas.add(PROMPT_TOKENS, (model,), meter.prompt_tokens)
        deltas.add(GENERATION_TOKENS, (model,), meter.completion_tokens)
    if meter.reservation is not None:  # admitted, so queued: the latencies mean something
        deltas.observe(E2E_LATENCY, (model, endpoint), time.monotonic() - meter.started)
        if meter.first_token_at is not None and endpoint in GENERATION_ENDPOINTS:
            deltas.observe(TIME_TO_FIRST_TOKEN, (model,), meter.first_token_at - meter.started)


def request_charged(meter) -> None:
    """The request was settled at ``meter.cost``."""
    if meter.cost:
        deltas.add(SPEND, (model_label(meter),), float(meter.cost))


def orphan_settled(record) -> None:
    """A request whose web process died was settled by a survivor (``inference.journal``): it is
    counted as its usage record says (its model is the catalog id its view had resolved)."""
    model, endpoint = record.model or UNKNOWN_MODEL, record.endpoint
    deltas.add(REQUESTS, (model, endpoint, str(record.status_code)))
    if record.cost:
        deltas.add(PROMPT_TOKENS, (model,), record.prompt_tokens)
        deltas.add(GENERATION_TOKENS, (model,), record.completion_tokens)
        deltas.add(SPEND, (model,), float(record.cost))
