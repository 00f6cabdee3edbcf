"""``manage.py createjointoken [--name NAME]``: a token with which a GPU host joins its machine."""

from django.core.management.base import BaseCommand

from deployments.fleet import join_token_create


class Command(BaseCommand):
    help = "Create a join token for GPU nodes and print it (as the last line). It is shown only this once."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="Join token", help="A name to recognise the token by.")

    def handle(self, *args, name, **options):
        token, plaintext = join_token_create(name=name)
        self.stderr.write(
            f"Created join token '{token.name}'. On a GPU machine run:\n"
            f"  python manage.py gpuworker --server http://<this server>:8000 --token <token>\n"
            "Store the token now; it is not shown again."
        )
        self.stdout.write(plaintext)
