"""A request's synchronous work runs on one of a few shared threads, and work shielded for it
(settling its usage) finishes on that thread even when the client hangs up."""

from __future__ import annotations

import asyncio
import threading

from asgiref.sync import sync_to_async

from gpucloud import request_threads
from gpucloud.request_threads import PooledASGIHandler


class _HangUp(PooledASGIHandler):
    """A request that starts settling its usage, shielded, and is then cut short by its client."""

    def __init__(self, ran_on: list[str]) -> None:
        self.ran_on = ran_on

    async def handle(self, scope, receive, send):
        async def settle():
            await asyncio.sleep(0.2)  # the request is over by now
            await sync_to_async(lambda: self.ran_on.append(threading.current_thread().name))()

        await sync_to_async(lambda: self.ran_on.append(threading.current_thread().name))()
        shielded = request_threads.shield(settle())
        asyncio.current_task().cancel()  # the client hangs up
        await shielded


def test_shielded_work_of_a_request_cut_short_finishes_on_the_requests_thread():
    ran_on: list[str] = []

    async def main():
        try:
            await _HangUp(ran_on)({"type": "http"}, None, None)
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    outcome = asyncio.run(main())

    assert outcome == "cancelled"
    # Settled after the cancellation, on the thread the request had (not "ThreadSensitiveContext has exited").
    assert len(ran_on) == 2
    assert ran_on[0] == ran_on[1]
    assert ran_on[0].startswith("request-sync-")
