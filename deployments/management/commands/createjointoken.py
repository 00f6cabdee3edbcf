"""``manage.py createjointoken [--name NAME] [--owner USERNAME] [--expires-in-days N] [--max-uses N]``:
a token with which a GPU host joins its machine. Without ``--owner`` its nodes are the operator's
own (trusted); with it they are that host's community nodes (the user becomes a host if needed)."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from deployments.fleet import join_token_create


class Command(BaseCommand):
    help = "Create a join token for GPU nodes and print it (as the last line). It is shown only this once."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="Join token", help="A name to recognise the token by.")
        parser.add_argument(
            "--owner", default=None, help="A host's username: its nodes are that host's community nodes."
        )
        parser.add_argument("--expires-in-days", type=int, default=None, help="The token expires after N days.")
        parser.add_argument("--max-uses", type=int, default=None, help="Machines that may join with it (default any).")

    def handle(self, *args, name, owner, expires_in_days, max_uses, **options):
        if max_uses is not None and max_uses < 1:
            raise CommandError("--max-uses must be at least 1.")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        if owner is None:
            token, plaintext = join_token_create(name=name, expires_at=expires_at, max_uses=max_uses)
        else:
            from marketplace.selectors import host_profile_of
            from marketplace.services import host_become, host_join_token_create

            User = get_user_model()
            try:
                user = User.objects.get(**{User.USERNAME_FIELD: owner})
            except User.DoesNotExist:
                raise CommandError(f"No user named '{owner}'.") from None
            host = host_profile_of(user) or host_become(user=user, display_name=user.get_username())
            token, plaintext = host_join_token_create(host=host, name=name, expires_at=expires_at, max_uses=max_uses)
        self.stderr.write(
            f"Created {token.trust} join token '{token.name}'. On a GPU machine run:\n"
            "  export GPUCLOUD_JOIN_TOKEN=<token>\n"
            "  python -m gpunode --server http://<this server>:8000\n"
            "Store the token now; it is not shown again."
        )
        self.stdout.write(plaintext)
