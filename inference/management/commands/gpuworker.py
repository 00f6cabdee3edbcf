"""``manage.py gpuworker``: the GPU node, kept under its old name. It runs ``python -m gpunode``
with the same arguments (see ``gpunode.cli``); the web tier imports nothing of the node."""

from __future__ import annotations

import os
import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Join this machine to the GPU fleet (runs python -m gpunode; see python -m gpunode --help)."

    def run_from_argv(self, argv):
        os.execv(sys.executable, [sys.executable, "-m", "gpunode", *argv[2:]])
