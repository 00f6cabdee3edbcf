"""Versioned prices: billing.services.price_version_record, selectors.price_in_force and request_cost."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import PriceVersion
from billing.selectors import price_in_force, request_cost
from deployments.models import CatalogModel

pytestmark = pytest.mark.django_db


def _model(**fields) -> CatalogModel:
    values = {
        "model_id": "test-model",
        "family": "test",
        "parameters_billion": Decimal("1"),
        "price_input_per_million": Decimal("0.10"),
        "price_output_per_million": Decimal("0.20"),
    }
    return CatalogModel.objects.create(**{**values, **fields})


def test_a_new_model_gets_its_first_version():
    model = _model()

    version = price_in_force(model)
    assert version.price_input_per_million == Decimal("0.10")
    assert version.price_output_per_million == Decimal("0.20")
    assert version.model_name == "test-model"


def test_changing_a_price_adds_a_version_and_keeps_the_old_one():
    model = _model()
    before = price_in_force(model)
    admitted_at = timezone.now()

    model.price_output_per_million = Decimal("0.50")
    model.save()

    assert PriceVersion.objects.filter(model=model).count() == 2
    assert price_in_force(model).price_output_per_million == Decimal("0.50")
    # A request admitted before the change is still charged the old price.
    assert price_in_force(model, admitted_at) == before
    before.refresh_from_db()
    assert before.price_output_per_million == Decimal("0.20")


def test_saving_without_a_price_change_adds_no_version():
    model = _model()
    model.context_length = 4096
    model.save()

    assert PriceVersion.objects.filter(model=model).count() == 1


def test_nothing_is_in_force_before_the_first_version():
    model = _model()

    assert price_in_force(model, timezone.now() - timedelta(days=1)) is None


def test_versions_outlive_a_deleted_model():
    model = _model()
    version = price_in_force(model)
    model.delete()

    version.refresh_from_db()
    assert version.model is None
    assert version.model_name == "test-model"


def test_request_cost_is_exact_decimal():
    version = PriceVersion(price_input_per_million=Decimal("0.10"), price_output_per_million=Decimal("0.20"))

    assert request_cost(version, 1_000_000, 500_000) == Decimal("0.20000000")
    assert request_cost(version, 7, 3) == Decimal("0.00000130")
    assert request_cost(version, 0, 0) == Decimal("0")


def test_request_cost_rounds_half_up_to_eight_places():
    version = PriceVersion(price_input_per_million=Decimal("0.0150"), price_output_per_million=Decimal("0"))

    # 0.015 / 1e6 = 0.000000015 -> 0.00000002
    assert request_cost(version, 1, 0) == Decimal("0.00000002")
