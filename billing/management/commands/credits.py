"""``manage.py credits USERNAME [--add 10.00] [--note TEXT]``: show or change a balance."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from billing import services
from billing.money import plain, usd
from billing.selectors import balance_of


class Command(BaseCommand):
    help = (
        "Print a user's credit balance, or with --add grant credits (a negative amount is an adjustment, "
        "refused if it would take the balance below zero). The balance is the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--add", metavar="USD", help="Amount to add, e.g. 10.00 (negative to take away).")
        parser.add_argument("--note", default="", help="Why: shown in the ledger.")

    def handle(self, *args, username, add, note, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user named '{username}'.") from None
        if add is not None:
            try:
                entry = services.staff_credit(user=user, amount=add, note=note or "manage.py credits")
            except ValidationError as error:
                raise CommandError(" ".join(error.messages)) from None
            self.stderr.write(f"Posted a {entry.get_kind_display().lower()} of {usd(entry.amount)} to {username}.")
        self.stdout.write(plain(balance_of(user)))
