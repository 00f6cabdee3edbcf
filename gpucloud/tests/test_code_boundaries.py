"""The code boundary: the web tier and the GPU node share only ``nodeprotocol``."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import BASE_DIR

WEB_APPS = ("gpucloud", "accounts", "deployments", "inference")


def _modules_after(code: str) -> list[str]:
    """The modules loaded by running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_node_imports_neither_django_nor_the_web_tier():
    loaded = _modules_after(
        "import gpunode.cli, gpunode.agent, gpunode.jobs, gpunode.replicas, gpunode.engines, gpunode.generation"
    )
    assert "django" not in loaded
    assert not [m for m in loaded if m.split(".")[0] in (*WEB_APPS, "celery", "channels", "channels_redis")]


def test_the_web_tier_imports_nothing_of_the_node():
    loaded = _modules_after(
        "import os, django\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'gpucloud.settings')\n"
        "django.setup()\n"
        "import gpucloud.asgi, gpucloud.urls, inference.views, inference.dispatcher, deployments.consumers\n"
        "import deployments.management.commands.runplatform, inference.management.commands.gpuworker"
    )
    assert "inference.views" in loaded
    assert [m for m in loaded if m.split(".")[0] == "gpunode"] == []
    assert "nodeprotocol" in loaded
