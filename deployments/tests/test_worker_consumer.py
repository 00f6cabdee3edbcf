"""/ws/workers/ in-process: a node's socket rides out a database that is briefly unreachable."""

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import OperationalError

from deployments import consumers
from deployments.fleet import join_token_create, node_register
from deployments.presence import INTERRUPTED_KEY
from gpucloud.asgi import application
from gpucloud.redis_client import get_redis
from nodeprotocol import VERSION, VERSION_HEADER

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def credential():
    _, token = join_token_create(name="rack")
    _, credential = node_register(
        token=token, name="box", host="", engine="simulated", slots=2, gpus=[], protocol=VERSION
    )
    return credential


def test_a_heartbeat_the_database_cannot_take_keeps_the_socket_and_the_replicas(credential, monkeypatch):
    def database_down(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(consumers, "node_heartbeat", database_down)
    get_redis().delete(INTERRUPTED_KEY)

    async def scenario():
        headers = [
            (b"authorization", f"Bearer {credential}".encode()),
            (VERSION_HEADER.encode(), str(VERSION).encode()),
        ]
        communicator = WebsocketCommunicator(application, "/ws/workers/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        assert (await communicator.receive_json_from(timeout=5))["type"] == "welcome"
        await communicator.send_json_to({"type": "heartbeat", "slots": 2, "replicas": {}, "gpus": []})
        # No answer, no close: the socket stays, and the next heartbeat tries again.
        assert await communicator.receive_nothing(timeout=1)
        await communicator.disconnect()

    async_to_sync(scenario)()

    assert get_redis().exists(INTERRUPTED_KEY)  # placement will not take the silence for absence
