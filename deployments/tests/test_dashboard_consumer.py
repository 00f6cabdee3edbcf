"""/ws/dashboard/: the live fleet view, for staff sessions only."""

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from deployments.fleet import join_token_create, node_register
from deployments.models import WorkerNode
from gpucloud.asgi import application
from nodeprotocol import VERSION as PROTOCOL

# The consumer reads the database from another thread: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/dashboard/"
ORIGIN = (b"origin", b"http://testserver")


def _session_headers(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    return [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()), ORIGIN]


async def _first_message(headers) -> tuple[bool, dict | None]:
    communicator = WebsocketCommunicator(application, PATH, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    message = await communicator.receive_json_from(timeout=5) if connected else None
    await communicator.disconnect()
    return connected, message


@pytest.fixture
def node():
    _, token = join_token_create(name="rack 3")
    node, _ = node_register(
        token=token, name="gpu-box", host="rack3.example.net", engine="simulated", slots=8, gpus=[], protocol=PROTOCOL
    )
    gpu = {"index": 0, "name": "A100-80GB", "utilization": 55, "memory_used_mb": 9000, "memory_total_mb": 81920}
    WorkerNode.objects.filter(pk=node.pk).update(
        status=WorkerNode.Status.ONLINE,
        last_heartbeat_at=timezone.now(),
        telemetry={"in_flight": 2, "queues": [], "gpus": [gpu]},
    )
    return node


def test_it_works(staff, node, catalog):
    connected, message = async_to_sync(_first_message)(_session_headers(staff))
    assert connected
    assert message["type"] == "fleet"
    nodes = {n["id"]: n for n in message["nodes"]}
    assert nodes[node.pk]["name"] == node.name
    assert nodes[node.pk]["status"] == "online"
    assert nodes[node.pk]["in_flight"] == 2
    assert nodes[node.pk]["gpus"][0]["utilization"] == 55
    assert {q["deployment"] for q in message["queues"]} == {d.name for d in catalog}


def test_it_pushes_updates(staff, node):
    @database_sync_to_async
    def heartbeat(in_flight: int):
        WorkerNode.objects.filter(pk=node.pk).update(telemetry={"in_flight": in_flight, "queues": [], "gpus": []})

    async def two_messages(headers):
        communicator = WebsocketCommunicator(application, PATH, headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        first = await communicator.receive_json_from(timeout=5)
        await heartbeat(7)
        second = await communicator.receive_json_from(timeout=5)  # a second later, without asking
        await communicator.disconnect()
        return first, second

    first, second = async_to_sync(two_messages)(_session_headers(staff))
    assert first["nodes"][0]["in_flight"] == 2
    assert second["nodes"][0]["in_flight"] == 7


def test_it_rejects_anonymous(node):
    connected, _ = async_to_sync(_first_message)([ORIGIN])
    assert not connected


def test_it_rejects_outsider(user, node):
    connected, _ = async_to_sync(_first_message)(_session_headers(user))
    assert not connected


def test_it_rejects_other_origins(staff, node):
    cookie, _ = _session_headers(staff)
    connected, _ = async_to_sync(_first_message)([cookie, (b"origin", b"https://evil.example")])
    assert not connected
