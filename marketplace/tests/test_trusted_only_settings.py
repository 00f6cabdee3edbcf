import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.models import ApiKey
from deployments.models import Trust, WorkerNode
from inference import jobqueue
from marketplace.selectors import account_trusted_only, trusted_only_for

pytestmark = pytest.mark.django_db


def test_createapikey_trusted_only(capsys, user):
    call_command("createapikey", user.username, "--name", "safe", "--trusted-only")
    assert ApiKey.objects.get(name="safe").trusted_only
    call_command("createapikey", user.username, "--name", "any")
    assert not ApiKey.objects.get(name="any").trusted_only


def test_the_key_form_sets_trusted_only(client, user):
    client.force_login(user)
    client.post(reverse("dashboard:keys"), {"name": "safe", "rpm": 60, "scopes": ["inference"], "trusted_only": "on"})
    key = ApiKey.objects.get(name="safe")
    assert key.trusted_only and trusted_only_for(key)
    assert "trusted nodes only" in client.get(reverse("dashboard:keys")).content.decode()


def test_the_account_choice_applies_to_every_key(client, user, make_key):
    key, _ = make_key(user)
    client.force_login(user)
    assert not trusted_only_for(key)
    response = client.post(reverse("marketplace:trusted-only"), {"trusted_only": "on"})
    assert response.status_code == 302
    assert account_trusted_only(user.pk) and trusted_only_for(key)
    client.post(reverse("marketplace:trusted-only"), {})
    assert not trusted_only_for(key)


def test_the_pricing_page_says_which_models_have_community_capacity(client, user, catalog):
    client.force_login(user)
    page = client.get(reverse("billing:pricing")).content.decode()
    assert 'data-capacity="community"' not in page and "trusted" in page
    WorkerNode.objects.update(trust=Trust.COMMUNITY)
    page = client.get(reverse("billing:pricing")).content.decode()
    assert 'data-capacity="community"' in page


def test_trusted_only_jobs_have_a_queue_community_nodes_skip():
    own = jobqueue.account_queue("deployment.x", 7, trusted_only=True)
    assert own == "deployment.x.a7.trusted" and jobqueue.trusted_only(own)
    assert not jobqueue.trusted_only(jobqueue.account_queue("deployment.x", 7))
    for key in jobqueue.priority_keys([own]):
        assert jobqueue.queue_of(key) == "deployment.x"
