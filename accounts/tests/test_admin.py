from decimal import Decimal

import pytest
from django.urls import reverse

from inference.models import UsageRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def objects(admin_user, make_key, catalog):
    api_key, _ = make_key(admin_user, name="admin key")
    deployment = catalog[0]
    record = UsageRecord.objects.create(
        request_id="req_admin_test",
        user=admin_user,
        api_key=api_key,
        endpoint="chat.completions",
        model=deployment.model.model_id,
        deployment=deployment.name,
        worker="gpuworker-1@test",
        status_code=200,
        prompt_tokens=3,
        completion_tokens=4,
        cost=Decimal("0.000001"),
    )
    return {"apikey": api_key, "catalogmodel": deployment.model, "deployment": deployment, "usagerecord": record}


ADMIN_PAGES = [
    ("accounts", "apikey"),
    ("deployments", "catalogmodel"),
    ("deployments", "deployment"),
    ("inference", "usagerecord"),
]


@pytest.mark.parametrize(("app", "model"), ADMIN_PAGES)
def test_changelist_works(admin_client, objects, app, model):
    response = admin_client.get(reverse(f"admin:{app}_{model}_changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize(("app", "model"), ADMIN_PAGES)
def test_change_page_works(admin_client, objects, app, model):
    response = admin_client.get(reverse(f"admin:{app}_{model}_change", args=[objects[model].pk]))
    assert response.status_code == 200


def test_it_never_shows_hashed_key(admin_client, objects):
    api_key = objects["apikey"]
    for url in [
        reverse("admin:accounts_apikey_changelist"),
        reverse("admin:accounts_apikey_change", args=[api_key.pk]),
    ]:
        content = admin_client.get(url).content.decode()
        assert api_key.hashed_key not in content
        assert f"{api_key.display_prefix}…" in content


def test_it_requires_staff(client, user):
    client.force_login(user)
    response = client.get(reverse("admin:accounts_apikey_changelist"))
    assert response.status_code == 302
