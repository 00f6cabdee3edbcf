"""``GET /api/workers``: the fleet's nodes, for operators (staff) only."""

import pytest

pytestmark = pytest.mark.django_db


def get(client, key: str):
    return client.get("/api/workers", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_it_works(client, staff, make_key, catalog):
    _, key = make_key(staff)

    response = get(client, key)

    assert response.status_code == 200
    assert [node["name"] for node in response.json()["data"]] == ["unit-node-1"]


def test_it_refuses_a_non_staff_key(client, user, make_key, catalog):
    _, key = make_key(user)

    response = get(client, key)

    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "not_an_operator")
    assert "unit-node-1" not in response.content.decode()
