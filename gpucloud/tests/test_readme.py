"""The README's quick-start commands, run as written against a live platform."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model

from conftest import BASE_DIR

pytestmark = pytest.mark.live

README = (BASE_DIR / "README.md").read_text()


def _block(marker: str | None = None, containing: str | None = None) -> str:
    """The fenced code block after ``<!-- readme-example: marker -->``, or the first one containing a text."""
    blocks = re.findall(r"(<!-- readme-example: (\w+) -->\n)?```\w*\n(.*?)```", README, re.S)
    for _, name, body in blocks:
        if (marker and name == marker) or (containing and containing in body):
            return body
    raise AssertionError(f"README has no block {marker or containing!r}")


def _run(script: str, live) -> str:
    script = script.replace("http://127.0.0.1:8000", live.url).replace(".venv/bin/python", sys.executable)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=BASE_DIR,
        env=live.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def demo_admin(live):
    # Not pytest-django's django_user_model: it would wrap the test in a transaction nobody else sees.
    admin, _ = get_user_model().objects.get_or_create(username="admin", defaults={"is_superuser": True})
    return admin


def test_the_quickstart_commands_work_as_written(live, demo_admin):
    create_key = _block(containing="export GPUCLOUD_API_KEY")

    curl_output = _run(create_key + _block("curl"), live)
    completion = json.loads(curl_output)
    assert completion.get("object") == "chat.completion", completion
    assert completion["usage"]["completion_tokens"] <= 20

    sdk_output = _run(create_key + _block("python"), live)
    lines = sdk_output.strip().splitlines()
    assert len(lines) >= 2 and lines[0]
    assert re.fullmatch(r".*\[\d+ tokens\]", lines[-1])

    usage_output = _run(create_key + _block(containing="/api/usage"), live)
    assert json.loads(usage_output)["object"] == "list"
