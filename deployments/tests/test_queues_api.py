"""``GET /api/queues``: requests waiting per deployment, for operators (staff) only."""

import pytest

pytestmark = pytest.mark.django_db


def get(client, key: str):
    return client.get("/api/queues", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_it_works(client, staff, make_key, catalog):
    _, key = make_key(staff)

    response = get(client, key)

    assert response.status_code == 200
    assert response.json()["object"] == "list"


def test_it_refuses_a_non_staff_key(client, user, make_key, catalog):
    _, key = make_key(user)

    response = get(client, key)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_an_operator"
    assert "deployment." not in response.content.decode()
