"""The Models & pricing page, for every signed-in user."""

from decimal import Decimal

import pytest
from django.urls import reverse

from deployments.models import ModelAlias

pytestmark = pytest.mark.django_db

URL = reverse("billing:pricing")


def test_it_works(client, user, model):
    ModelAlias.objects.create(alias="priced", model=model)
    client.force_login(user)

    response = client.get(URL)

    assert response.status_code == 200
    content = response.content.decode()
    assert "priced-model" in content
    assert "8,192" in content
    assert "$1" in content and "$2" in content
    assert "priced</code>" in content


def test_it_shows_the_prices_in_force(client, user, model):
    model.price_output_per_million = Decimal("3.50")
    model.save()
    client.force_login(user)

    assert "$3.5" in client.get(URL).content.decode()


def test_it_requires_login(client, db):
    assert client.get(URL).status_code == 302
