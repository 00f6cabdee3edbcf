import pytest
from django.urls import reverse

from accounts.models import ApiKey
from marketplace.services import host_become
from marketplace.tests.test_earnings import _node, _settle

pytestmark = pytest.mark.django_db

URL = "/api/host/earnings"


def test_it_returns_the_host_s_earnings(client, catalog, make_key, user, outsider):
    host_become(user=outsider, display_name="Bob")
    node = _node("bob-box-9", owner=outsider)
    record = _settle(make_key, user, "req-api-1", worker=node.name)
    _, key = make_key(outsider, scopes=[ApiKey.Scope.MANAGEMENT])
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content
    body = response.json()
    earned = body["pending"]
    assert float(earned) == pytest.approx(float(record.cost) * 0.7, abs=1e-8)
    assert body["available"] == "0.00" and body["paid"] == "0.00"
    assert body["requests"] == 1 and body["tokens"] == 150
    assert body["per_node"] == [{"node_id": node.pk, "node": node.name, "earned": earned, "requests": 1, "tokens": 150}]
    assert len(body["per_day"]) == 30 and body["per_day"][-1]["earned"] == earned


def test_it_needs_a_management_key(client, outsider, make_key):
    host_become(user=outsider, display_name="Bob")
    _, key = make_key(outsider, scopes=[ApiKey.Scope.INFERENCE])
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 403
    assert client.get(URL).status_code == 401


def test_it_answers_404_for_a_user_who_is_no_host(client, user, make_key):
    _, key = make_key(user)
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_a_host"


def test_the_host_page_shows_earnings(client, catalog, make_key, user, outsider):
    host_become(user=outsider, display_name="Bob")
    node = _node("bob-box-10", owner=outsider)
    _settle(make_key, user, "req-page-1", worker=node.name)
    client.force_login(outsider)
    page = client.get(reverse("marketplace:host")).content.decode()
    assert 'id="earnings-data"' in page and "chart.umd.js" in page
    assert 'data-daily-chart="earnings" data-label="Earned (USD)"' in page and "/static/js/billing.js" in page
    assert "Per model" in page and "llama-3.1-8b-instruct" in page
    assert node.name in page
