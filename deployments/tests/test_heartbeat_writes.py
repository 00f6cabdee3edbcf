"""A heartbeat's database work is small: under load every write waits for the write lock."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments.fleet import join_token_create, node_heartbeat, node_register
from deployments.models import WorkerNode
from nodeprotocol import VERSION

pytestmark = pytest.mark.django_db


def _writes(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith(("UPDATE", "INSERT", "DELETE"))]


def test_a_steady_heartbeat_is_one_write():
    _, token = join_token_create(name="rack")
    node, _ = node_register(token=token, name="box", host="", engine="simulated", slots=2, gpus=[], protocol=VERSION)
    beat = {"slots": 2, "replicas": {}, "gpus": [{"index": 0, "utilization": 10}]}
    node_heartbeat(node.pk, beat)  # offline -> online: the status first, for placement to see

    with CaptureQueriesContext(connection) as queries:
        node_heartbeat(node.pk, {**beat, "gpus": [{"index": 0, "utilization": 55}]})

    writes = _writes(queries.captured_queries)
    assert len(writes) == 1, writes
    node.refresh_from_db()
    assert node.status == WorkerNode.Status.ONLINE
    assert node.telemetry["gpus"] == [{"index": 0, "utilization": 55}]
    assert node.telemetry["queues"] == []
