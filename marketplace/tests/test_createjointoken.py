import pytest
from django.core.management import CommandError, call_command

from deployments.fleet import node_register
from deployments.models import JoinToken, Trust
from marketplace.models import HostProfile
from nodeprotocol import VERSION as PROTOCOL

pytestmark = pytest.mark.django_db


def _register(plaintext):
    node, _ = node_register(
        token=plaintext, name="box", host="", engine="simulated", slots=4, gpus=[], protocol=PROTOCOL
    )
    return node


def test_owner_makes_a_community_token_for_that_host(capsys, user):
    call_command(
        "createjointoken", "--name", "home", "--owner", user.username, "--max-uses", "2", "--expires-in-days", "3"
    )
    plaintext = capsys.readouterr().out.strip().splitlines()[-1]
    token = JoinToken.objects.get(name="home")
    assert token.trust == Trust.COMMUNITY and token.created_by == user and token.max_uses == 2
    assert token.expires_at is not None
    assert HostProfile.objects.filter(user=user).exists()
    node = _register(plaintext)
    assert node.trust == Trust.COMMUNITY and node.owner == user


def test_without_owner_it_makes_a_trusted_token(capsys):
    call_command("createjointoken", "--name", "rack")
    node = _register(capsys.readouterr().out.strip().splitlines()[-1])
    assert node.trust == Trust.TRUSTED and node.owner is None


def test_it_rejects_an_unknown_owner():
    with pytest.raises(CommandError, match="No user named"):
        call_command("createjointoken", "--owner", "nobody")
    assert not JoinToken.objects.exists()
