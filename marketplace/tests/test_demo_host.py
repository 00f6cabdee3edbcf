import pytest

from deployments.fleet import node_register
from deployments.models import Trust
from marketplace.services import DEMO_HOST, demo_host_ensure
from nodeprotocol import VERSION as PROTOCOL

pytestmark = pytest.mark.django_db


def test_the_demo_has_a_host_with_a_community_token(tmp_path):
    username, password, path = demo_host_ensure(tmp_path)
    assert username == DEMO_HOST and len(password) > 10
    node, _ = node_register(
        token=path.read_text().strip(), name="host-1", host="", engine="simulated", slots=4, gpus=[], protocol=PROTOCOL
    )
    assert node.trust == Trust.COMMUNITY and node.owner.username == DEMO_HOST
    # Run again (a restart): the same host, password and token.
    assert demo_host_ensure(tmp_path) == (username, password, path)
