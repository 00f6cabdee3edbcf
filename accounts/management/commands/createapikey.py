"""``manage.py createapikey USERNAME --name NAME [--rpm N] [--scopes inference,management]
[--budget 5 --budget-period month] [--tpm 100000] [--max-parallel 4]``."""

import argparse
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_create


def _usd(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"'{value}' is not an amount in USD, e.g. 5 or 12.50") from None
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError("the budget must be a non-negative amount in USD")
    return amount


class Command(BaseCommand):
    help = "Create an API key for a user and print it (as the last line). It is shown only this once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="A name to recognise the key by.")
        parser.add_argument("--rpm", type=int, default=None, help="Requests-per-minute limit.")
        parser.add_argument(
            "--scopes", default="inference", help="Comma-separated: inference, management (default: inference)."
        )
        parser.add_argument(
            "--priority",
            choices=[label.split()[0].lower() for label in ApiKey.Priority.labels],
            default="standard",
            help="Priority tier: waiting requests of higher tiers run first (default standard).",
        )
        parser.add_argument(
            "--models", default="", help="Comma-separated model ids the key may use (default: every model)."
        )
        parser.add_argument("--expires-in-days", type=int, default=None, help="Make the key expire after N days.")
        parser.add_argument("--budget", type=_usd, default=None, help="Budget in USD per budget period.")
        parser.add_argument(
            "--budget-period",
            choices=ApiKey.BudgetPeriod.values,
            default=ApiKey.BudgetPeriod.MONTH,
            help="What the budget is per: day, month (UTC) or total (default month).",
        )
        parser.add_argument(
            "--budget-notice", type=int, default=80, help="Percent of the budget at which the dashboard warns."
        )
        parser.add_argument("--tpm", type=int, default=None, help="Tokens per minute (prompt + max_tokens).")
        parser.add_argument("--max-parallel", type=int, default=None, help="Most requests in flight at once.")
        parser.add_argument(
            "--trusted-only", action="store_true", help="Never run the key's requests on community (hosts') nodes."
        )

    def handle(self, *args, username, name, rpm, scopes, priority, models, expires_in_days, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user named '{username}'. Create one with: manage.py createsuperuser") from None
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days is not None else None
        try:
            api_key, raw_key = api_key_create(
                user=user,
                name=name,
                scopes=scopes.split(","),
                rpm=rpm,
                expires_at=expires_at,
                priority=ApiKey.Priority[priority.upper()],
                allowed_models=[m.strip() for m in models.split(",") if m.strip()],
                max_budget=options["budget"],
                budget_period=options["budget_period"],
                budget_soft_percent=options["budget_notice"],
                tpm=options["tpm"],
                max_parallel=options["max_parallel"],
                trusted_only=options["trusted_only"],
            )
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stderr.write(
            f"Created key '{api_key.name}' ({api_key.display_prefix}…) for {username}: "
            f"scopes {', '.join(api_key.scopes)}, {api_key.rpm} requests/minute. Store it now; it is not shown again."
        )
        self.stdout.write(raw_key)
