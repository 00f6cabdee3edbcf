"""Money helpers: USD as ``Decimal`` with 8 decimal places, and the integer units Redis counts in."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.core.exceptions import ValidationError

PLACES = Decimal("0.00000001")
#: Redis holds money as integers of 1e-8 USD: Lua numbers are doubles, exact to 2**53 units (~$90M).
UNITS_PER_USD = 10**8


def to_money(value: Decimal | int | str) -> Decimal:
    """A USD amount as a Decimal with 8 places. Floats are refused: they cannot hold cents exactly.

    Raises ValidationError for something that is no number or has more than 8 decimal places.
    """
    if isinstance(value, float):
        raise TypeError("Money is never a float: pass a Decimal, an int or a string.")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(f"'{value}' is not an amount in USD, e.g. 10.00.") from None
    if not amount.is_finite():
        raise ValidationError(f"'{value}' is not an amount in USD, e.g. 10.00.")
    if amount != amount.quantize(PLACES, rounding=ROUND_HALF_UP):
        raise ValidationError("Amounts have at most 8 decimal places.")
    return amount.quantize(PLACES)


def round_money(amount: Decimal) -> Decimal:
    """Round a computed amount (e.g. tokens x price) to 8 places, half up."""
    return amount.quantize(PLACES, rounding=ROUND_HALF_UP)


def to_units(amount: Decimal) -> int:
    return int((Decimal(amount) * UNITS_PER_USD).to_integral_exact())


def from_units(units: int) -> Decimal:
    return (Decimal(units) / UNITS_PER_USD).quantize(PLACES)


def plain(amount: Decimal) -> str:
    """Cents, and more places only where there are more: 5.00, 0.0012, -1.50."""
    sign, amount = ("-" if amount < 0 else ""), abs(amount).normalize()
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return f"{sign}{amount:f}"


def usd(amount: Decimal) -> str:
    """For messages: $5.00, $0.0012, -$1.50."""
    text = plain(amount)
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"
