"""A bounded set of threads for the synchronous (database) work of HTTP requests.

Django's ASGI handler gives every request a thread of its own for its thread-sensitive calls
(``sync_to_async``: authentication, admission, settling) and keeps it until the response ends.
A stream is open for minutes, so a web process with 2,000 streams open ran 2,000 idle threads:
their stacks, thread states and database connection wrappers were most of its memory.

:class:`PooledASGIHandler` gives each request one of ``WEB_SYNC_THREADS`` single-thread executors
instead, for its whole life, as Django's contract asks (one request's synchronous calls run on one
thread, one at a time). Requests share those threads, so a thread's database connection serves
the requests that take turns on it (``CONN_MAX_AGE`` applies as before; a transaction never spans
two calls). A request gets the executor with the fewest calls waiting, then the fewest requests.

Work a request must finish even when its client hangs up (settling its usage) runs under
:func:`shield`: the request keeps its thread until that work is done. (asgiref asks that tasks
created in a request's thread context finish before it exits; a settlement that outlived its
request used to fail with "ThreadSensitiveContext has exited", and the usage was left unrecorded.)
"""

from __future__ import annotations

import asyncio
import contextvars
import tempfile
import threading
from collections.abc import Awaitable
from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler


class _Lane(ThreadPoolExecutor):
    """One thread; counts the calls waiting or running on it and the requests attached to it."""

    def __init__(self, index: int) -> None:
        super().__init__(max_workers=1, thread_name_prefix=f"request-sync-{index}")
        self.pending = 0
        self.requests = 0
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._lock:
            self.pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future) -> None:
        with self._lock:
            self.pending -= 1


class RequestThreads:
    """The lanes of one web process (created on first use, ``size`` of them)."""

    def __init__(self, size: int) -> None:
        self.lanes = [_Lane(i) for i in range(max(1, size))]

    def take(self) -> _Lane:
        lane = min(self.lanes, key=lambda lane: (lane.pending, lane.requests))
        lane.requests += 1
        return lane

    @staticmethod
    def give_back(lane: _Lane) -> None:
        lane.requests -= 1


_threads: RequestThreads | None = None


def request_threads() -> RequestThreads:
    global _threads
    if _threads is None:
        _threads = RequestThreads(settings.WEB_SYNC_THREADS)
    return _threads


_must_finish: contextvars.ContextVar[set[asyncio.Future] | None] = contextvars.ContextVar(
    "request_must_finish", default=None
)


def shield(awaitable: Awaitable) -> asyncio.Future:
    """``asyncio.shield(awaitable)``, and the request it runs for keeps its thread until it is done:
    for work that must finish even if the client hangs up and the request is cancelled."""
    task = asyncio.ensure_future(awaitable)
    pending = _must_finish.get()
    if pending is not None:
        pending.add(task)
        task.add_done_callback(pending.discard)
    return asyncio.shield(task)


class PooledASGIHandler(ASGIHandler):
    """Django's ASGI handler, with a request's thread-sensitive work on a shared, bounded set of threads."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        threads = request_threads()
        lane = threads.take()
        pending: set[asyncio.Future] = set()
        _must_finish.set(pending)
        try:
            async with ThreadSensitiveContext(executor=lane):
                try:
                    await self.handle(scope, receive, send)
                finally:
                    if pending:  # shielded work of a request cut short (its usage being settled)
                        await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))
        finally:
            threads.give_back(lane)

    async def read_body(self, receive):
        """Django's, letting the event loop run between a large body's chunks (event loop stays free):
        the chunks of a body already received are all queued, so Django's loop over them never
        yields, and writing a 30 MB body to its temporary file held the loop for its whole length."""
        limit = settings.FILE_UPLOAD_MAX_MEMORY_SIZE
        body_file = tempfile.SpooledTemporaryFile(max_size=limit, mode="w+b")  # noqa: SIM115 -- returned open
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()  # the client went away before the end of its body
            if "body" in message:
                body_file.write(message["body"])
            if not message.get("more_body", False):
                break
            await asyncio.sleep(0)
        body_file.seek(0)
        return body_file
