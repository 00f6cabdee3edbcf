"""``manage.py periodic``: run the platform's periodic work once (reliability, autoscaling, prices).

The web processes run it on their own (gpucloud.periodic, driven by node heartbeats); this is for
an operator who wants it now, or a cron job on a platform whose nodes are all away.
"""

from django.core.management.base import BaseCommand

from gpucloud import periodic


class Command(BaseCommand):
    help = "Run the periodic work once: reliability scores, autoscaling and dynamic prices."

    def handle(self, *args, **options):
        for name, step in periodic.steps():
            result = step()
            self.stdout.write(f"{name}: {result!r}")
