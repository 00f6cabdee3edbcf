"""A real GPU node in a network namespace of its own, which reaches the web server's port and
nothing else (no Redis, no database): it joins, heartbeats and serves streamed requests.

It connects to a second web process, bound to the namespace's link, while clients call the first:
nodes may connect to any web process. Needs root and iproute2 (CI has both).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import httpx
import openai
import pytest

from conftest import BASE_DIR, _free_port, node_environment, wait_for
from deployments.models import Deployment
from gpucloud.daphne import command as daphne_command
from inference.models import UsageRecord

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2 (ip netns)"),
]

MODEL = "mistral-7b-instruct-v0.3"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespace():
    """A network namespace joined to this one by a veth pair: (name, our address, its address)."""
    tag = os.getpid() % 100_000
    name, outside, inside = f"gpc{tag}", f"gpch{tag}", f"gpcn{tag}"
    subnet = f"10.231.{tag % 250}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"{subnet}.1/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/30", "dev", inside)
        _ip("netns", "exec", name, "ip", "link", "set", inside, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name, f"{subnet}.1"
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _reachable_from(namespace: str, host: str, port: int) -> bool:
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=1).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe]).returncode == 0


def test_a_node_that_reaches_only_the_web_port_joins_and_serves_streams(fleet, namespace, make_key, tmp_path):
    name, address = namespace
    port = _free_port()
    env = {**fleet.env, "ALLOWED_HOSTS": f"127.0.0.1,localhost,{address}"}
    web = subprocess.Popen(daphne_command(address, port), env=env, cwd=BASE_DIR)
    node = None
    try:
        wait_for(lambda: _answers(f"http://{address}:{port}/health") or web.poll() is not None, timeout=30)
        command = ["ip", "netns", "exec", name, sys.executable, "-m", "gpunode", f"--server=http://{address}:{port}"]
        node = subprocess.Popen(
            [*command, "--name=isolated", f"--state-dir={tmp_path}", "--loglevel=WARNING"],
            env={**node_environment(), "GPUCLOUD_JOIN_TOKEN": fleet.join_token},
            cwd=BASE_DIR,
        )
        fleet.workers.append(node)
        isolated = fleet.wait_serving("isolated", timeout=60)

        # From inside, the web port answers and nothing of the server side does.
        assert _reachable_from(name, address, port)
        for host, service_port in [(address, 6379), ("127.0.0.1", 6379), (address, 5432), ("127.0.0.1", 5432)]:
            assert not _reachable_from(name, host, service_port), f"{host}:{service_port} is reachable"

        # Clients call the other web process; the job reaches the node through this one.
        _, key = make_key(fleet.user, rpm=10_000)
        client = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=key, max_retries=0, timeout=60)
        assert Deployment.objects.get(model__model_id=MODEL).queue_name in isolated.telemetry["queues"]
        for seed in (1, 2, 3):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Stream across the boundary."}],
                stream=True,
                seed=seed,
                max_tokens=30,
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
            assert text
            record = wait_for(
                lambda raw=raw: UsageRecord.objects.filter(request_id=raw.headers["x-request-id"]).first(), timeout=10
            )
            assert (record.worker, record.status_code) == (isolated.name, 200)
    finally:
        for process in (node, web):
            if process is not None:
                fleet.stop(process)
