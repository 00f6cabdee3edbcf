"""A web process dies with requests in flight: a survivor stops their jobs and meters them."""

from __future__ import annotations

import signal
import subprocess

import httpx
import pytest

from conftest import BASE_DIR, _free_port, long_seeds, wait_for
from gpucloud.daphne import command as daphne_command
from inference.journal import CODE_PROCESS_LOST, STATUS_PROCESS_LOST
from inference.models import UsageRecord

pytestmark = pytest.mark.live

MODEL = "qwen2.5-72b-instruct"  # slow on the simulated A100: the stream lasts
MESSAGES = [{"role": "user", "content": "Tell a long story."}]


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def test_a_dead_web_processs_stream_is_stopped_on_its_node_and_metered_by_a_survivor(live, make_key):
    """The node holds its socket to the session's web process; the client streams through a
    second one, which is killed mid-stream."""
    port = _free_port()
    doomed = subprocess.Popen(daphne_command("127.0.0.1", port), env=live.env, cwd=BASE_DIR)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=30, message="the second web process")
        _, key = make_key(live.user, rpm=10_000)
        body = {"model": MODEL, "messages": MESSAGES, "stream": True, "seed": long_seeds(MODEL, MESSAGES, 1)[0]}
        body["max_tokens"] = 200
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
            request_id = response.headers["x-request-id"]
            lines = response.iter_lines()
            received = [next(lines) for _ in range(4)]  # the role chunk and some text
            assert all(line.startswith("data: ") for line in received if line)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)

        record = wait_for(
            lambda: UsageRecord.objects.filter(request_id=request_id).first(),
            timeout=20,
            message="a survivor to meter the request",
        )
        assert (record.status_code, record.error_code) == (STATUS_PROCESS_LOST, CODE_PROCESS_LOST)
        assert record.worker.startswith("main-")
        assert 0 < record.completion_tokens < 200  # what was relayed before the process died
        # Its job was stopped on the node: nothing of it is in flight any more.
        wait_for(
            lambda: live.node("main").telemetry.get("in_flight") == 0, timeout=10, message="the job to stop on its node"
        )
    finally:
        if doomed.poll() is None:
            doomed.kill()
