"""Engines produce tokens. The worker picks one by the deployment's ``engine`` name."""

from __future__ import annotations

from inference.engines.base import Engine, GenerationJob, TokenEvent
from inference.engines.simulated import SimulatedEngine

ENGINES: dict[str, type[Engine]] = {"simulated": SimulatedEngine}


class UnknownEngine(Exception):
    pass


def get_engine(name: str) -> Engine:
    try:
        return ENGINES[name]()
    except KeyError:
        raise UnknownEngine(f"This worker has no engine named '{name}'.") from None


__all__ = ["ENGINES", "Engine", "GenerationJob", "TokenEvent", "UnknownEngine", "get_engine"]
