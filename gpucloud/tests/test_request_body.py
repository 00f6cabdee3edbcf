"""Taking in a large body leaves the event loop free: Daphne hands it over in large chunks, and the
ASGI handler lets other tasks run between them."""

from __future__ import annotations

import asyncio

import pytest
from django.core.exceptions import RequestAborted

from gpucloud import daphne
from gpucloud.request_threads import PooledASGIHandler


def _queued(chunks: list[bytes], events: list[str]):
    """A ``receive`` whose messages are all queued already (as Daphne queues a received body)."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        events.append("chunk")
        return messages.pop(0)

    return receive


def test_other_tasks_run_between_a_bodys_chunks():
    events: list[str] = []
    chunks = [bytes([i]) * 1000 for i in range(5)]

    async def main():
        reading = asyncio.ensure_future(PooledASGIHandler().read_body(_queued(chunks, events)))

        async def other():
            while not reading.done():
                events.append("other")
                await asyncio.sleep(0)

        await asyncio.gather(reading, other())
        return reading.result()

    body_file = asyncio.run(main())

    assert body_file.read() == b"".join(chunks)
    # Every chunk after the first came after another task had its turn.
    assert events[events.index("chunk") :][:9] == ["chunk", "other"] * 4 + ["chunk"]


def test_a_client_leaving_mid_body_aborts_the_request():
    messages = [{"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    with pytest.raises(RequestAborted):
        asyncio.run(PooledASGIHandler().read_body(receive))


def test_daphne_hands_bodies_over_in_large_chunks():
    server = daphne.DeadlineServer(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])

    assert server.request_buffer_size == daphne.REQUEST_BODY_CHUNK_BYTES >= 1024 * 1024
