"""Fixtures for billing tests: an empty billing state in Redis for every test, a priced model."""

from decimal import Decimal

import pytest

from billing.redis_state import forget_all


@pytest.fixture(autouse=True)
def empty_billing_state():
    """User ids come round again between tests (rolled-back SQLite sequences): start each test with
    no billing state in Redis, as after a restart."""
    forget_all()
    yield


@pytest.fixture
def model(db):
    """A catalog model priced $1 per million input tokens and $2 per million output tokens."""
    from deployments.models import CatalogModel

    return CatalogModel.objects.create(
        model_id="priced-model",
        family="test",
        parameters_billion=Decimal("8"),
        context_length=8192,
        price_input_per_million=Decimal("1.00"),
        price_output_per_million=Decimal("2.00"),
    )
