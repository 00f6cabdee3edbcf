"""``{% load money %}``: ``{{ amount|usd }}`` renders $5.00, $0.0012 or -$1.50."""

from decimal import Decimal

from django import template

from billing.money import usd as format_usd

register = template.Library()


@register.filter
def usd(amount) -> str:
    if amount is None or amount == "":
        return ""
    return format_usd(Decimal(str(amount)))
