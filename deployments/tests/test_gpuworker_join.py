"""``manage.py gpuworker --server --token``: joining the fleet, and being refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import BASE_DIR, wait_for
from deployments.fleet import join_token_create, join_token_revoke, node_credential_revoke
from deployments.models import WorkerNode

pytestmark = pytest.mark.live


def _join(live, token: str, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(BASE_DIR / "manage.py"),
            "gpuworker",
            f"--server={live.url}",
            f"--token={token}",
            f"--name={name}",
        ],
        env=live.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_joins_with_gpus_and_a_credential_of_its_own(fleet):
    fleet.start_worker("joiner", "--slots=3", "--gpus=H100-80GB,RTX-4090-24GB")
    node = fleet.wait_serving("joiner")

    assert node.slots == 3
    assert [(g["name"], g["memory_total_mb"]) for g in node.gpus] == [("H100-80GB", 81920), ("RTX-4090-24GB", 24576)]
    assert node.host
    assert node.credential_prefix and len(node.hashed_credential) == 64
    assert node.join_token is not None


def test_it_refuses_an_unknown_join_token(live):
    result = _join(live, "gpcj_000000000000_not-a-real-token", "intruder")
    assert result.returncode != 0
    assert "join token is not valid" in result.stderr
    assert not WorkerNode.objects.filter(name__startswith="intruder-").exists()


def test_it_refuses_a_revoked_join_token(live):
    token, plaintext = join_token_create(name="to revoke")
    join_token_revoke(token=token)
    result = _join(live, plaintext, "late")
    assert result.returncode != 0
    assert "revoked" in result.stderr


def test_a_revoked_node_credential_stops_the_worker(fleet):
    worker = fleet.start_worker("revokee")
    node = fleet.wait_serving("revokee")

    node_credential_revoke(node=node)

    assert worker.wait(timeout=20) is not None

    def offline():
        node.refresh_from_db()
        return node.status in (WorkerNode.Status.OFFLINE, WorkerNode.Status.LEFT)

    wait_for(offline, timeout=5, message="the node to be offline")
    wait_for(lambda: node.name not in fleet_health(fleet), timeout=5, message="the node to leave /health")


def fleet_health(live) -> list[str]:
    import httpx

    return httpx.get(f"{live.url}/health", timeout=5).json()["checks"]["workers"]["names"]
