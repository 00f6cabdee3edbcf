"""``manage.py reconcilebilling``: check balances against the ledger and charges against usage."""

from django.core.management.base import BaseCommand, CommandError

from billing.selectors import reconciliation_differences


class Command(BaseCommand):
    help = (
        "Check every balance against the sum of its ledger entries and every request's charge against "
        "its usage record. Prints each difference; exits with status 1 when there is any."
    )

    def handle(self, *args, **options):
        differences = reconciliation_differences()
        for difference in differences:
            self.stdout.write(difference)
        if differences:
            raise CommandError(f"{len(differences)} difference(s) between the ledger and the stored figures.")
        self.stdout.write("Balances and charges agree with the ledger.")
