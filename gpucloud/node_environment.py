"""The environment a GPU node is started with on a server's machine (``runplatform``, the tests, the
benchmarks): this process's, less the server's own settings, which a node never gets or needs."""

from __future__ import annotations

import os

SERVER_ONLY_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "API_KEY_HASH_SECRET",
    "DJANGO_SETTINGS_MODULE",
    "GPUCLOUD_VAR_DIR",
)


def node_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the server-only variables, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in SERVER_ONLY_VARIABLES}, **extra}
