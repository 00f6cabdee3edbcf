"""Engines produce tokens and embeddings. A worker picks one by the deployment's ``engine`` name.

:func:`get_engine` keeps one instance per engine name and configuration in each process, so a
model is loaded (or an upstream checked) once, and every request of the deployment shares it.
"""

from __future__ import annotations

import json
import threading

from gpunode.engines.base import EmbeddingJob, Engine, EngineRefused, EngineUnavailable, GenerationJob, TokenEvent
from gpunode.engines.hf import HFEngine
from gpunode.engines.openai_engine import OpenAIEngine, UpstreamError
from gpunode.engines.simulated import SimulatedEngine

ENGINES: dict[str, type[Engine]] = {"simulated": SimulatedEngine, "openai": OpenAIEngine, "hf": HFEngine}

_instances: dict[tuple[str, str], Engine] = {}
_instances_lock = threading.Lock()


class UnknownEngine(Exception):
    pass


def get_engine(name: str, config: dict | None = None) -> Engine:
    """The process's engine ``name`` configured by ``config``; created on first use.

    Raises UnknownEngine for a name this worker does not know, and EngineUnavailable for a
    configuration the engine refuses (e.g. the "openai" engine without a ``base_url``).
    """
    try:
        engine_class = ENGINES[name]
    except KeyError:
        raise UnknownEngine(f"This worker has no engine named '{name}'.") from None
    config = dict(config or {})
    key = (name, json.dumps(config, sort_keys=True, separators=(",", ":"), default=str))
    with _instances_lock:
        engine = _instances.get(key)
        if engine is None:
            engine = _instances[key] = engine_class(config)
    return engine


__all__ = [
    "ENGINES",
    "EmbeddingJob",
    "Engine",
    "EngineRefused",
    "EngineUnavailable",
    "GenerationJob",
    "HFEngine",
    "OpenAIEngine",
    "SimulatedEngine",
    "TokenEvent",
    "UnknownEngine",
    "UpstreamError",
    "get_engine",
]
