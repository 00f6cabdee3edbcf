"""The periodic work: one process per interval runs every step, and a failing step stops no other."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gpucloud import periodic
from gpucloud.redis_client import get_redis


def test_one_process_per_interval_takes_the_turn(settings):
    settings.PERIODIC_INTERVAL = 30
    get_redis().delete(periodic.TURN_KEY)

    async def two_processes():
        return [await periodic.claim_turn(), await periodic.claim_turn()]

    assert asyncio.run(two_processes()) == [True, False]
    assert 0 < get_redis().pttl(periodic.TURN_KEY) <= 30_000
    get_redis().delete(periodic.TURN_KEY)


@pytest.mark.django_db
def test_every_step_runs_even_when_one_fails(monkeypatch):
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    ran = []

    def failing(now):
        raise RuntimeError("boom")

    monkeypatch.setattr(
        periodic,
        "steps",
        lambda: [("first", lambda now: ran.append(("first", now))), ("broken", failing),
                 ("last", lambda now: ran.append(("last", now)))],
    )  # fmt: skip
    periodic.run(now=now)
    assert ran == [("first", now), ("last", now)]


@pytest.mark.django_db
def test_the_real_steps_run_on_an_idle_platform(caplog):
    names = [name for name, _ in periodic.steps()]
    assert names == ["reliability", "autoscaling", "utilisation", "dynamic prices"]
    periodic.run()
    assert not [r for r in caplog.records if r.name == "gpucloud.periodic"]  # no step failed


@pytest.mark.django_db
def test_the_command_runs_every_step():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("periodic", stdout=out)
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == [name for name, _ in periodic.steps()]
