"""``manage.py gpuworker``: run a GPU worker that serves the running deployments."""

from django.core.management.base import BaseCommand

from inference.worker import CONTROL_QUEUE, FleetStep, default_worker_name


class Command(BaseCommand):
    help = "Run a GPU worker: a Celery worker that serves the queues of the running deployments."

    def add_arguments(self, parser):
        parser.add_argument("--name", default=None, help="Worker name (default: gpuworker-<pid>@<host>).")
        parser.add_argument(
            "--concurrency", type=int, default=8, help="How many requests this worker runs at once (default 8)."
        )
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, name, concurrency, loglevel, **options):
        from gpucloud.celery import app

        app.steps["consumer"].add(FleetStep)
        app.worker_main(
            [
                "worker",
                f"--hostname={name or default_worker_name()}",
                "--pool=threads",
                f"--concurrency={concurrency}",
                f"--queues={CONTROL_QUEUE}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
