"""What a node reads from its own environment, and which of it a deployment may ask for.

A deployment's ``engine_config`` can name an environment variable that holds an engine's secret
(``api_key_env``: an upstream server's API key), so the secret stays on the node. The node's
operator lists the variables a deployment may name in ``GPUCLOUD_ENGINE_ENV_ALLOW``
(comma-separated); anything else is refused, and the node's own state (its credential, its join
token) never can be named, whatever the list says.
"""

from __future__ import annotations

import os

ENGINE_ENV_ALLOW = "GPUCLOUD_ENGINE_ENV_ALLOW"
# Never readable by an engine: what makes this machine a member of the fleet.
NEVER_EXPOSED_PREFIX = "GPUCLOUD_"


class SecretRefused(Exception):
    """A deployment asked for an environment variable this node does not expose; says which and why."""


def allowed_engine_variables() -> frozenset[str]:
    raw = os.environ.get(ENGINE_ENV_ALLOW, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def engine_secret(name: str) -> str:
    """The value of environment variable ``name`` for an engine, if the operator allowed it."""
    if not isinstance(name, str) or not name or name.upper().startswith(NEVER_EXPOSED_PREFIX):
        raise SecretRefused(f"engine_config.api_key_env may not name {name!r}: the node's own settings are private.")
    if name not in allowed_engine_variables():
        raise SecretRefused(
            f"engine_config.api_key_env names {name}, which this node's operator has not allowed: add it to "
            f"{ENGINE_ENV_ALLOW} on the node (comma-separated) and restart it."
        )
    value = os.environ.get(name, "")
    if not value:
        raise SecretRefused(
            f"The environment variable {name} (engine_config.api_key_env) is not set on this node: set it to the "
            "upstream server's API key and restart the node."
        )
    return value


def instant_pacing() -> bool:
    """``SIMULATED_ENGINE_INSTANT``: the simulated engine produces tokens without pacing (benchmarks)."""
    return os.environ.get("SIMULATED_ENGINE_INSTANT", "").strip().lower() in {"1", "true", "yes", "on"}
